"""OpenMM quantities in (both drivers), and back out with ``nstore.units.to_openmm``.

The values come from a real OpenMM context where OpenMM produces them
(``getPotentialEnergy``, ``getPositions``, ``getPeriodicBoxVectors``,
``getParticleMass``), so the forms tested are the forms users hold.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as mm
import pytest
from pint.errors import DimensionalityError

from nstore import StorageInterface, connect, ureg
from nstore.units import from_openmm, to_openmm

from test_storage_types import assert_same

Q = ureg.Quantity
POSITIONS = [(0.0, 0.0, 0.0), (0.4, 0.0, 0.0), (0.0, 0.5, 0.1)]


@pytest.fixture(scope="module")
def context() -> openmm.Context:
    """Three Lennard-Jones particles in a periodic 2 nm box, on the Reference platform."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(2, 0, 0), openmm.Vec3(0, 2, 0), openmm.Vec3(0, 0, 2))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(0.9 * mm.nanometer)
    for _ in POSITIONS:
        system.addParticle(39.948 * mm.dalton)
        force.addParticle(0.0, 0.34 * mm.nanometer, 0.99 * mm.kilojoule_per_mole)
    system.addForce(force)
    platform = openmm.Platform.getPlatformByName("Reference")
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001 * mm.picosecond), platform)
    ctx.setPositions([openmm.Vec3(*p) for p in POSITIONS] * mm.nanometer)
    return ctx


@pytest.fixture(scope="module")
def state(context) -> openmm.State:
    return context.getState(getEnergy=True, getPositions=True)


def openmm_forms(state):
    """(name, OpenMM value, what read() of a fixed variable gives) for every form a user holds."""
    energy = state.getPotentialEnergy()
    return [
        ("energy", energy, Q(energy._value, "kilojoule/mole")),
        ("int_scalar", 300 * mm.kelvin, Q(300, "kelvin")),
        ("list", [1.0, 2.5] * mm.nanometer, Q(np.array([1.0, 2.5]), "nanometer")),
        ("tuple", (1, 2) * mm.angstrom, Q(np.array([1, 2]), "angstrom")),
        ("ndarray", np.arange(6.0).reshape(2, 3) * mm.nanometer, Q(np.arange(6.0).reshape(2, 3), "nanometer")),
        ("positions", state.getPositions(), Q(np.array(POSITIONS), "nanometer")),
        ("positions_numpy", state.getPositions(asNumpy=True), Q(np.array(POSITIONS), "nanometer")),
        ("box", state.getPeriodicBoxVectors(), Q(2.0 * np.eye(3), "nanometer")),
        ("vec3", openmm.Vec3(1.0, 2.0, 3.0) * mm.nanometer, Q(np.array([1.0, 2.0, 3.0]), "nanometer")),
        ("rate", 2.0 / mm.picosecond, Q(2.0, "1/picosecond")),
        ("restraint", 1.5 * mm.kilocalorie_per_mole / mm.angstrom**2, Q(1.5, "kilocalorie/(angstrom**2*mole)")),
        ("charge", -1.0 * mm.elementary_charge, Q(-1.0, "elementary_charge")),
    ]


def assert_close(actual, expected):
    """Same unit and magnitude type, magnitudes equal up to rounding (for converted values)."""
    assert actual.units == expected.units, f"{actual.units} != {expected.units}"
    assert type(actual.magnitude) is type(expected.magnitude)
    np.testing.assert_allclose(actual.magnitude, expected.magnitude, rtol=1e-12)


def stacked(*entries):
    return Q(np.stack([np.asarray(e.magnitude) for e in entries]), entries[0].units)


def test_every_openmm_form_round_trips(open_store, state, subtests):
    """Fixed and appendable, in the session and after reopening: the pint quantity with OpenMM's unit."""
    store = open_store()
    for name, value, expected in openmm_forms(state):
        with subtests.test(msg="session 1", form=name):
            store.fixed[name].write(value)
            assert_same(store.fixed[name].read(), expected, "fixed")
            assert store.appended[name].append(value) == 0
            assert store.appended[name].append(value) == 1
            assert_same(store.appended[name].read(), stacked(expected, expected), "appended")
    store.close()
    store = open_store()
    for name, value, expected in openmm_forms(state):
        with subtests.test(msg="reopened", form=name):
            assert_same(store.fixed[name].read(), expected, "fixed after reopen")
            assert_same(store.appended[name].read(1), expected, "entry after reopen")
            store.appended[name].write(value, at_index=0)
            assert_same(store.appended[name].read(0), expected, "at_index write")


def test_append_in_another_openmm_unit_converts(open_store):
    store = open_store()
    store.energy.append(-1.0 * mm.kilojoule_per_mole)
    store.energy.append(-1.0 * mm.kilocalorie_per_mole)
    store.energy.append(Q(-2.0, "kJ/mol"))  # pint and OpenMM values mix in one variable
    assert_close(store.energy.read(), Q(np.array([-1.0, -4.184, -2.0]), "kilojoule/mole"))
    store.positions.append([openmm.Vec3(1, 2, 3)] * mm.nanometer)
    store.positions.append([openmm.Vec3(10, 20, 30)] * mm.angstrom)
    assert_close(store.positions.read(), Q(np.array([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]]), "nanometer"))
    store.positions.write(np.array([[5.0, 0.0, 0.0]]) * mm.angstrom, at_index=1)
    assert_close(store.positions.read(1), Q(np.array([[0.5, 0.0, 0.0]]), "nanometer"))


def test_incompatible_units_write_nothing(open_store):
    store = open_store()
    store.energy.append(-1.0 * mm.kilojoule_per_mole)
    store.box.write([openmm.Vec3(2, 0, 0)] * mm.nanometer)
    with pytest.raises(DimensionalityError):
        store.energy.append(1.0 * mm.nanometer)
    with pytest.raises(DimensionalityError):
        store.energy.write(300.0 * mm.kelvin, at_index=0)
    with pytest.raises(DimensionalityError):
        store.box.write([openmm.Vec3(2, 0, 0)] * mm.picosecond)
    assert_same(store.energy.read(), Q(np.array([-1.0]), "kilojoule/mole"))
    assert_same(store.box.read(), Q(np.array([[2.0, 0.0, 0.0]]), "nanometer"))


def test_openmm_units_pint_lacks_or_sizes_differently_are_stored_in_si(open_store):
    """``item`` is unknown to pint, OpenMM's ``debye`` is 1.6e-4 off pint's: OpenMM converts them to SI."""
    store = open_store()
    store.count.write(3.0 * mm.item)
    assert_close(store.count.read(), Q(3.0 / 6.02214076e23, "mole"))
    store.dipole.append(openmm.Vec3(1.0, 0.0, 0.0) * mm.debye)
    assert_close(store.dipole.read(0), Q(np.array([3.3361608148905854e-30, 0.0, 0.0]), "ampere*meter*second"))
    assert to_openmm(store.dipole.read(0))[0].value_in_unit(mm.debye) == pytest.approx(1.0, rel=1e-12)


def test_openmm_values_that_cannot_be_stored_are_refused_naming_the_path(open_store):
    store = open_store()
    with pytest.raises(ValueError, match=r"^bad/nat: OpenMM unit 'nat' has no SI form"):
        store.bad.nat.append(3.0 * mm.nat)
    with pytest.raises(TypeError, match=r"^bad/s: cannot store a value of type 'openmm.unit.Quantity of str'"):
        store.bad.s.write("abc" * mm.nanometer)
    assert "bad" not in store


def test_dict_holding_openmm_quantities(open_store, state):
    """OpenMM quantities anywhere inside a dict (also in its lists) are stored as pint quantities."""
    store = open_store()
    settings = {"temperature": 300.0 * mm.kelvin, "timestep": 2.0 * mm.femtosecond,
                "nested": {"box": state.getPeriodicBoxVectors(), "steps": [10, 1.0 * mm.picosecond]}, "name": "lj"}
    store.settings.write(settings)
    store.history.append(settings)
    expected = {"temperature": Q(300.0, "kelvin"), "timestep": Q(2.0, "femtosecond"),
                "nested": {"box": Q(2.0 * np.eye(3), "nanometer"), "steps": [10, Q(1.0, "picosecond")]}, "name": "lj"}
    assert_same(store.settings.read(), expected)
    assert_same(store.history.read(0), expected)
    assert type(settings["temperature"]) is mm.Quantity  # the caller's dict is left alone


def test_handles_from_the_driver_convert_too(open_store):
    """``driver.get_storage_variable(path)`` handles take OpenMM quantities like the proxies do."""
    store = open_store()
    store.energy.append(-1.0 * mm.kilojoule_per_mole)
    handle = store.storage_driver.get_storage_variable("energy")
    assert handle.append(-2.0 * mm.kilojoule_per_mole) == 1
    handle.write(-3.0 * mm.kilojoule_per_mole, at_index=0)
    assert_same(store.energy.read(), Q(np.array([-3.0, -2.0]), "kilojoule/mole"))


def test_to_openmm_round_trip_feeds_openmm(open_store, context, state):
    """What was stored from OpenMM goes back into OpenMM: energies compare, positions set a context."""
    store = open_store()
    store.energy.append(state.getPotentialEnergy())
    store.positions.append(state.getPositions())
    store.rate.write(2.0 / mm.picosecond)
    energy = to_openmm(store.energy.read(-1))
    assert isinstance(energy, mm.Quantity) and energy.unit == mm.kilojoule_per_mole
    assert energy == state.getPotentialEnergy()
    positions = to_openmm(store.positions.read(0))
    assert positions.unit == mm.nanometer and positions._value.shape == (3, 3)
    context.setPositions(positions)
    again = context.getState(getEnergy=True, getPositions=True)
    assert again.getPotentialEnergy() == state.getPotentialEnergy()
    assert to_openmm(store.rate.read()) == 2.0 / mm.picosecond


def test_to_openmm_units_by_name_or_through_si():
    assert to_openmm(Q(1.5, "kcal/mol")) == 1.5 * mm.kilocalorie_per_mole
    atm = to_openmm(Q(1.0, "atm"))  # pint's standard_atmosphere is OpenMM's atmosphere
    assert atm.unit == mm.atmosphere and atm._value == 1.0
    pound = to_openmm(Q(2.0, "lb"))  # OpenMM has no pound: SI base units
    assert pound.unit == mm.kilogram and pound._value == pytest.approx(0.90718474)
    celsius = to_openmm(Q(25.0, "degC"))
    assert celsius.unit == mm.kelvin and celsius._value == pytest.approx(298.15)
    with pytest.raises(TypeError, match="needs a pint Quantity"):
        to_openmm(1.5 * mm.nanometer)


def test_dalton_is_a_molar_mass_in_openmm(open_store, context):
    """OpenMM's dalton (g/mol) is stored as gram/mole; pint's dalton (a mass) is refused by to_openmm."""
    store = open_store()
    mass = context.getSystem().getParticleMass(0)
    assert str(mass.unit) == "dalton"
    store.mass.write(mass)
    assert_same(store.mass.read(), Q(39.948, "gram/mole"))
    back = to_openmm(store.mass.read())
    assert back.value_in_unit(mm.dalton) == pytest.approx(39.948)
    with pytest.raises(ValueError, match=r"'dalton': pint's dalton is a mass .* OpenMM's dalton is a molar mass"):
        to_openmm(Q(39.948, "dalton"))
    with pytest.raises(ValueError, match="molar mass"):
        to_openmm(Q(np.ones(3), "dalton * nanometer ** 2"))


def test_pipelined_appends_of_openmm_quantities(tmp_path, daemon_factory, state):
    """The pipelined remote driver queues the converted value (a copy), like any pint quantity."""
    daemon = daemon_factory(tmp_path / "run.nc")
    store = StorageInterface(connect(daemon.endpoint, pipeline=True, timeout=30))
    try:
        positions = np.array(POSITIONS) * mm.nanometer
        indices = [store.positions.append(positions) for _ in range(3)]
        positions._value[:] = -1.0  # reusing the buffer after append changes nothing stored
        store.energy.append(state.getPotentialEnergy())
        store.storage_driver.flush()
        assert [int(i) for i in indices] == [0, 1, 2]
        assert_same(store.positions.read(), Q(np.stack([np.array(POSITIONS)] * 3), "nanometer"))
        assert_same(store.energy.read(), Q(np.array([state.getPotentialEnergy()._value]), "kilojoule/mole"))
    finally:
        store.close()


def test_from_openmm_refuses_other_values():
    with pytest.raises(TypeError, match="needs an openmm.unit.Quantity"):
        from_openmm(Q(1.0, "nm"))
    assert_same(from_openmm([openmm.Vec3(1, 2, 3)] * mm.angstrom), Q(np.array([[1.0, 2.0, 3.0]]), "angstrom"))
