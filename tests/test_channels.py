"""Channel-name normalisation and mapping between montages."""

import numpy as np
import pytest

from bci.channels import ChannelSet, map_channels, normalize_name
from bci.errors import DataError


@pytest.mark.parametrize(
    "raw, expected",
    [("EEG Fp1-Ref", "Fp1"), ("FP1", "Fp1"), ("Fp1.", "Fp1"), ("T3", "T7"), ("t4", "T8"),
     ("T5", "P7"), ("EEG T6-LE", "P8"), ("Cz..", "Cz"), ("FCZ", "FCz"), ("SP1", "SP1")],
)
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected


def test_duplicate_after_normalisation_is_an_error():
    with pytest.raises(DataError, match="both normalise to 'T7'"):
        ChannelSet(["T3", "T7"])


def test_pick_and_reorder_reports():
    src = ChannelSet(["Cz", "C3", "C4", "Fz"])
    data = np.arange(4)[:, None] * np.ones((4, 5))
    out, report = map_channels(data, src, ChannelSet(["C3", "Cz", "C4"]))
    assert out[:, 0].tolist() == [1, 0, 2]
    assert "picked 3" in report and "dropped 1 (Fz)" in report and "reordered" in report


def test_interpolation_of_missing_channel_uses_neighbours():
    # a smooth spatial field: a missing electrode's value is near its neighbours'
    names = ["Fz", "Cz", "Pz", "C3", "C4", "FC1", "FC2", "CP1", "CP2", "F3", "F4", "P3", "P4"]
    src = ChannelSet(names)
    target = ChannelSet(names + ["FCz"])
    field = np.array([src.positions[n] @ np.array([0.0, 1.0, 0.5]) for n in names])
    data = np.outer(field, np.ones(3))
    out, report = map_channels(data, src, target)
    assert "interpolated 1 (FCz)" in report
    expected = target.positions["FCz"] @ np.array([0.0, 1.0, 0.5])
    assert out[-1, 0] == pytest.approx(expected, rel=0.25)
    assert out[:-1] == pytest.approx(data)


def test_missing_channels_without_positions_refused():
    src = ChannelSet(["ch1", "ch2"], ["seeg", "seeg"])
    with pytest.raises(DataError, match=r"missing from the recording \(ch3\)"):
        src.plan_mapping(ChannelSet(["ch1", "ch3"], ["seeg", "seeg"]))


def test_interpolation_can_be_refused():
    with pytest.raises(DataError, match="interpolation is off"):
        ChannelSet(["C3", "C4", "Fz", "Pz"]).plan_mapping(["C3", "Cz"], interpolate=False)
