"""Metrics on hand-built hair tables: counting rules, density, widths, classes, units."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from trichoscan.calibration import Calibration
from trichoscan.counting import HairTable, count_hairs
from trichoscan.errors import InputError
from trichoscan.metrics import (
    SUMMARY_COLUMNS,
    WidthCutoffs,
    classify_widths,
    counted_by_rule,
    end_cut_flags,
    hidden_end_flags,
    summarize,
    width_cut_flags,
)

SHAPE = (100, 200)


def make_table(ends, widths, exit_end, unit_id, bundle=None) -> HairTable:
    """A hair table of straight hairs between the given (x0, y0, x1, y1) ends."""
    ends = np.asarray(ends, dtype=float)
    n = len(ends)
    labels = np.zeros(SHAPE, dtype=np.int32)
    paths = []
    for i, (x0, y0, x1, y1) in enumerate(ends):
        t = np.linspace(0, 1, 50)
        path = np.column_stack([x0 + t * (x1 - x0), y0 + t * (y1 - y0)])
        paths.append(path)
        xs = np.clip(np.rint(path[:, 0]).astype(int), 0, SHAPE[1] - 1)
        ys = np.clip(np.rint(path[:, 1]).astype(int), 0, SHAPE[0] - 1)
        labels[ys, xs] = i + 1
    length = np.hypot(ends[:, 2] - ends[:, 0], ends[:, 3] - ends[:, 1])
    return HairTable(
        hair_id=np.arange(1, n + 1, dtype=np.int32),
        length_px=length,
        width_px=np.asarray(widths, dtype=float),
        width_sd_px=np.zeros(n),
        end_a_xy=ends[:, :2].copy(),
        end_b_xy=ends[:, 2:].copy(),
        exit_end=np.asarray(exit_end, dtype="<U1"),
        unit_id=np.asarray(unit_id, dtype=np.int32),
        bundle_size=np.ones(n, np.int32) if bundle is None else np.asarray(bundle, np.int32),
        labels=labels,
        paths=tuple(paths),
    )


@pytest.fixture
def table() -> HairTable:
    # 0: wholly inside; 1: exit inside, tip cut by the right border;
    # 2: stub entering from the left border (exit outside); 3: crossing the whole field;
    # 4 and 5: a V from one opening at (100, 80), inside.
    return make_table(
        ends=[
            (40, 40, 80, 40),
            (150, 50, 199, 50),
            (0, 20, 30, 25),
            (60, 0, 60, 99),
            (100, 80, 90, 60),
            (100, 80, 110, 60),
        ],
        widths=[5.0, 10.0, 20.0, 8.0, 10.0, 12.0],
        exit_end=["a", "a", "a", "a", "a", "a"],
        unit_id=[1, 2, 3, 4, 5, 5],
    )


def test_end_cut_flags_follow_the_field_edge(table):
    field = np.ones(SHAPE, bool)
    cut = end_cut_flags(table, field)
    expected = np.array(
        [[0, 0], [0, 1], [1, 0], [1, 1], [0, 0], [0, 0]],
        dtype=bool,
    )
    np.testing.assert_array_equal(cut, expected)


def test_counting_rules(table):
    cut = end_cut_flags(table, np.ones(SHAPE, bool))
    np.testing.assert_array_equal(counted_by_rule(table, cut, "visible"), [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(counted_by_rule(table, cut, "inside"), [1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(counted_by_rule(table, cut, "exit"), [1, 1, 0, 0, 1, 1])
    # The same stub with its exit at the inner end counts.
    flipped = table.with_exit_ends(np.array(["a", "a", "b", "a", "a", "a"]))
    np.testing.assert_array_equal(counted_by_rule(flipped, cut, "exit"), [1, 1, 1, 0, 1, 1])
    with pytest.raises(InputError):
        counted_by_rule(table, cut, "all")


def test_unknown_exit_counts_unless_both_ends_cut(table):
    unknown = table.with_exit_ends(np.full(len(table), "?"))
    cut = end_cut_flags(unknown, np.ones(SHAPE, bool))
    np.testing.assert_array_equal(counted_by_rule(unknown, cut, "exit"), [1, 1, 1, 0, 1, 1])


def test_summarize_with_scale(table):
    field = np.ones(SHAPE, bool)
    cal = Calibration(5.0, "given")
    result = summarize(table, field, cal, count_rule="exit")
    assert result.hair_count == 4
    assert result.visible_hair_count == 6
    assert result.inside_hair_count == 3
    assert result.exit_hair_count == 4
    area_cm2 = 200 * 100 * (5e-3) ** 2 / 100
    assert result.field_area_cm2 == pytest.approx(area_cm2)
    assert result.density_per_cm2 == pytest.approx(4 / area_cm2)
    widths_um = np.array([5.0, 10.0, 10.0, 12.0]) * 5.0  # 25, 50, 50, 60 µm
    assert result.mean_width_um == pytest.approx(widths_um.mean())
    assert result.median_width_um == pytest.approx(50.0)
    assert result.width_sd_um == pytest.approx(np.std(widths_um, ddof=1))
    assert (result.vellus_count, result.intermediate_count, result.terminal_count) == (1, 2, 1)
    assert (result.thin_count, result.thick_count) == (1, 3)
    assert result.cumulative_thickness_mm_per_cm2 == pytest.approx(
        widths_um.sum() * 1e-3 / area_cm2
    )
    # Units among counted hairs: {1}, {2}, {5, 6} -> 3 units, 4/3 hairs per unit.
    assert result.follicular_unit_count == 3
    assert result.hairs_per_unit == pytest.approx(4 / 3)
    assert result.single_hair_unit_pct == pytest.approx(200 / 3)
    assert sum(result.width_histogram["counts"]) == 4


def test_summarize_without_scale_has_no_physical_units(table):
    result = summarize(table, np.ones(SHAPE, bool), Calibration.unknown(), count_rule="inside")
    assert result.hair_count == 3
    assert result.mean_width_px == pytest.approx((5 + 10 + 12) / 3)
    for name in (
        "density_per_cm2",
        "mean_width_um",
        "median_width_um",
        "vellus_count",
        "intermediate_count",
        "terminal_count",
        "thin_count",
        "cumulative_thickness_mm_per_cm2",
        "field_area_cm2",
        "width_histogram",
    ):
        assert getattr(result, name) is None, name
    assert result.hair_classes() is None


def test_bundles_count_as_several_hairs():
    tbl = make_table([(40, 40, 80, 40)], widths=[24.0], exit_end=["a"], unit_id=[1], bundle=[2])
    result = summarize(tbl, np.ones(SHAPE, bool), Calibration(5.0, "given"))
    assert result.hair_count == 2
    assert result.mean_width_um == pytest.approx(60.0)
    assert result.follicular_unit_count == 1
    assert result.hairs_per_unit == pytest.approx(2.0)


def _bars(*lines: tuple[int, int, int, int, int]) -> HairTable:
    """count_hairs on a mask of straight bars (x0, y0, x1, y1, thickness)."""
    m = np.zeros((120, 200), np.uint8)
    for x0, y0, x1, y1, thick in lines:
        cv2.line(m, (x0, y0), (x1, y1), 1, thick)
    return count_hairs(m.astype(bool))


def test_end_against_another_shaft_is_hidden():
    # T: a stem ending on the side of a long bar. Its junction end is hidden (where the
    # hair goes on is unseen); its free end and the long bar's ends are not.
    t = _bars((10, 60, 190, 60, 7), (100, 60, 100, 100, 5))
    assert len(t) == 2
    stem = int(np.argmin(t.length_px))
    junction_end = 0 if t.end_a_xy[stem, 1] < t.end_b_xy[stem, 1] else 1
    hidden = hidden_end_flags(t)
    assert hidden[stem, junction_end] and not hidden[stem, 1 - junction_end]
    assert not hidden[1 - stem].any()
    # Exit rule: the stem counts only when its exit is the free end.
    field = np.ones(t.labels.shape, bool)
    cut = end_cut_flags(t, field)
    exits = np.array(["a", "a"])
    exits[stem] = "ab"[junction_end]
    at_junction = counted_by_rule(t.with_exit_ends(exits), cut, "exit", hidden)
    exits[stem] = "ab"[1 - junction_end]
    at_free_end = counted_by_rule(t.with_exit_ends(exits), cut, "exit", hidden)
    assert not at_junction[stem] and at_free_end[stem]
    # The other rules ignore it.
    assert counted_by_rule(t, cut, "inside", hidden)[stem]


def test_shared_end_of_a_v_is_not_hidden():
    # Two hairs leaving one opening: each stops against the other, at the other's end.
    t = _bars((100, 20, 60, 110, 5), (100, 20, 140, 110, 5))
    assert len(t) == 2
    assert not hidden_end_flags(t).any()


def test_hidden_end_flags_on_the_table_fixture(table):
    # 1-px label lines: no end stops against another hair's side.
    assert hidden_end_flags(table).shape == (6, 2)
    assert not hidden_end_flags(table).any()
    assert hidden_end_flags(HairTable.empty(SHAPE)).shape == (0, 2)


def test_field_mask_edge_counts_as_border(table):
    field = np.ones(SHAPE, bool)
    field[:, 140:] = False  # hair 1 now starts outside the field
    cut = end_cut_flags(table, field)
    assert cut[1].all()


def test_classify_widths_and_cutoffs():
    got = classify_widths(np.array([10.0, 29.9, 30.0, 59.9, 60.0, 100.0]))
    assert got.tolist() == [
        "vellus",
        "vellus",
        "intermediate",
        "intermediate",
        "terminal",
        "terminal",
    ]
    custom = classify_widths(np.array([35.0, 45.0]), WidthCutoffs(40.0, 45.0))
    assert custom.tolist() == ["vellus", "terminal"]
    with pytest.raises(InputError):
        WidthCutoffs(70.0, 60.0)


def test_to_dict_round_trips_json(table):
    result = summarize(table, np.ones(SHAPE, bool), Calibration(5.0, "given"), source="x.jpg")
    data = json.loads(result.to_json())
    assert data["schema_version"] == "1.3"
    assert data["metrics"]["hair_count"] == 4
    assert data["calibration"] == {
        "um_per_px": 5.0,
        "source": "given",
        "device": None,
        "detail": "",
    }
    assert [h["counted"] for h in data["hairs"]] == [True, True, False, False, True, True]
    assert data["hairs"][0]["hair_class"] == "vellus"
    assert data["hairs"][0]["end_a_hidden"] is False
    assert data["hairs"][0]["width_um"] == pytest.approx(25.0)
    assert set(result.summary()) == set(SUMMARY_COLUMNS)


def test_empty_table():
    empty = HairTable.empty(SHAPE)
    result = summarize(empty, np.ones(SHAPE, bool), Calibration(5.0, "given"))
    assert result.hair_count == 0
    assert result.density_per_cm2 == 0.0
    assert result.mean_width_um is None
    assert result.follicular_unit_count == 0
    assert result.hairs_per_unit is None
    json.loads(result.to_json())


def test_width_cut_flags_mark_slivers_along_the_edge():
    # A 10 px hair cut square by the right border touches the edge over ~one width; a
    # 4 px sliver running along the top border touches it over its whole length.
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[45:55, 150:200] = 1
    labels[0:4, 20:120] = 2
    labels[60:70, 20:80] = 3
    table = HairTable(
        hair_id=np.array([1, 2, 3], np.int32),
        length_px=np.array([50.0, 100.0, 60.0]),
        width_px=np.array([10.0, 4.0, 10.0]),
        width_sd_px=np.zeros(3),
        end_a_xy=np.array([[150.0, 50.0], [20.0, 2.0], [20.0, 65.0]]),
        end_b_xy=np.array([[199.0, 50.0], [119.0, 2.0], [79.0, 65.0]]),
        exit_end=np.array(["a", "a", "a"], dtype="<U1"),
        unit_id=np.array([1, 2, 3], np.int32),
        bundle_size=np.ones(3, np.int32),
        labels=labels,
        paths=tuple(np.array([[0.0, 0.0], [1.0, 0.0]]) for _ in range(3)),
    )
    field = np.ones(SHAPE, bool)
    np.testing.assert_array_equal(width_cut_flags(table, field), [False, True, False])
    # The same sliver inside a smaller field is cut by the field's edge, not the border.
    inner = np.zeros(SHAPE, bool)
    inner[0:90, 10:190] = True
    np.testing.assert_array_equal(width_cut_flags(table, inner), [False, True, False])

    # Widths: the sliver is left out of the width statistics and classed at the median
    # measured width (both measured hairs are 10 px = 50 µm: intermediate).
    result = summarize(table, field, Calibration(5.0, "given"), count_rule="visible")
    assert result.mean_width_um == pytest.approx(50.0)
    assert result.intermediate_count == 3
    assert result.vellus_count == 0
    assert result.to_dict()["hairs"][1]["width_cut"] is True
