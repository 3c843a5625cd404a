"""The daemon answers, and the parity fixture wires the remote driver to it."""

import numpy as np


def test_round_trip_through_fixture(open_store, driver_kind):
    store = open_store()
    assert store.replica.energy.append(1.5) == 0
    assert store.replica.energy.append(2.5) == 1
    store.positions.write(np.arange(6.0).reshape(2, 3))
    store.close()
    store = open_store()
    assert store.replica.energy.read().tolist() == [1.5, 2.5]
    assert store.positions.read().tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
