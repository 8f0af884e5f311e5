import pytest

from core.faces.detector import Detection
from core.faces.tracking import Track, iou, link_tracks


def det(x, y, size=100, confidence=0.99):
    return Detection((float(x), float(y), float(x + size), float(y + size)), confidence, {})


def test_iou_of_hand_made_boxes():
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


def test_one_moving_face_is_one_person():
    # Slow drift at first (boxes overlap), then fast moves with no overlap between samples.
    xs = [100, 130, 160, 190, 330, 470, 610, 750]
    frames = [(i * 10, [det(x, 200 + i * 5)]) for i, x in enumerate(xs)]

    tracks = link_tracks(frames)

    assert len(tracks) == 1
    assert tracks[0].id == 0
    assert tracks[0].frames == [i * 10 for i in range(8)]
    assert [tracks[0].detections[i * 10].box[0] for i in range(8)] == xs


def test_two_faces_passing_each_other_keep_their_ids():
    # A walks right along the top, B walks left along the bottom; they pass at frame 40.
    # Steps of 120 px leave no overlap between samples, so linking relies on the fallback.
    frames = []
    for i in range(8):
        a = det(100 + 120 * i, 100)
        b = det(940 - 120 * i, 340)
        frames.append((i * 10, [b, a] if i % 2 else [a, b]))   # order in the list must not matter

    tracks = link_tracks(frames)

    assert len(tracks) == 2
    top, bottom = tracks
    assert {d.box[1] for d in top.detections.values()} == {100.0}
    assert {d.box[1] for d in bottom.detections.values()} == {340.0}
    assert [top.detections[i * 10].box[0] for i in range(8)] == [100 + 120 * i for i in range(8)]
    assert len(top.detections) == len(bottom.detections) == 8


def test_stray_detection_is_dropped_but_kept_when_only_one_frame_sampled():
    stray = det(900, 500, size=60)
    frames = [(0, [det(100, 100)]), (10, [det(110, 100), stray]), (20, [det(120, 100)])]

    tracks = link_tracks(frames)
    assert len(tracks) == 1
    assert stray not in tracks[0].detections.values()

    single = link_tracks([(5, [det(100, 100), stray])])
    assert len(single) == 2
    assert [t.first_frame for t in single] == [5, 5]


def test_at_most_one_detection_per_track_per_frame():
    # Two overlapping boxes in frame 10: the track takes the better-overlapping one and the
    # other starts a new person (kept: it continues in frame 20).
    frames = [(0, [det(100, 100)]),
              (10, [det(140, 100), det(105, 100)]),
              (20, [det(110, 100), det(180, 100)])]
    tracks = link_tracks(frames)
    assert len(tracks) == 2
    first, second = tracks
    assert [first.detections[f].box[0] for f in first.frames] == [100, 105, 110]
    assert [second.detections[f].box[0] for f in second.frames] == [140, 180]


def test_ids_follow_first_appearance_then_x():
    frames = [(0, [det(500, 100), det(100, 400)]),
              (5, [det(505, 100), det(105, 400), det(300, 250, size=80)]),
              (10, [det(510, 100), det(110, 400), det(300, 250, size=80)])]
    tracks = link_tracks(frames)
    assert [t.id for t in tracks] == [0, 1, 2]
    assert [t.detections[t.first_frame].box[0] for t in tracks] == [100, 500, 300]
    assert [t.first_frame for t in tracks] == [0, 0, 5]


def test_empty_input_gives_no_tracks():
    assert link_tracks([]) == []
    assert link_tracks([(0, []), (10, [])]) == []


def test_box_at_interpolates_and_holds_ends():
    track = Track(id=0, detections={
        10: Detection((0.0, 0.0, 10.0, 10.0), 0.99, {}),
        20: Detection((10.0, 20.0, 30.0, 40.0), 0.99, {}),
        40: Detection((30.0, 20.0, 50.0, 40.0), 0.99, {}),
    })
    assert track.first_frame == 10 and track.last_frame == 40 and track.frames == [10, 20, 40]
    assert track.box_at(10) == (0.0, 0.0, 10.0, 10.0)
    assert track.box_at(15) == pytest.approx((5.0, 10.0, 20.0, 25.0))
    assert track.box_at(25) == pytest.approx((15.0, 20.0, 35.0, 40.0))
    # Gaps 10 and 20: median 15, so end boxes are held for 7 frames.
    assert track.box_at(47) == (30.0, 20.0, 50.0, 40.0)
    assert track.box_at(48) is None
    assert track.box_at(3) == (0.0, 0.0, 10.0, 10.0)
    assert track.box_at(2) is None
    assert track.box_at(60, max_gap=20) == (30.0, 20.0, 50.0, 40.0)
    assert track.box_at(61, max_gap=20) is None
    assert track.box_at(41, max_gap=0) is None


def test_box_at_for_single_detection_only_at_that_frame():
    track = Track(id=0, detections={7: Detection((1.0, 2.0, 3.0, 4.0), 0.99, {})})
    assert track.box_at(7) == (1.0, 2.0, 3.0, 4.0)
    assert track.box_at(8) is None
    assert track.box_at(9, max_gap=2) == (1.0, 2.0, 3.0, 4.0)
