"""Transcript readers (SRT, WebVTT, Whisper JSON, CSV), sources, validation errors and documented repairs."""
from __future__ import annotations

import json

import pytest

from medvid.errors import MedvidError
from medvid.io.transcripts import (
    Segment, find_transcripts, fit_to_duration, parse_time, read_transcript, transcript_source, write_whisper_json,
)

SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:03,500\r\nWe open the <i>peritoneum</i>\r\nover the triangle.\r\n\r\n"
    "2\r\n00:00:03,500 --> 00:00:06,250\r\nThe duct is clipped.\r\n\r\n"
    "3\r\n01:00:00,000 --> 01:00:02,000\r\nOne hour in.\r\n"
)
VTT = """WEBVTT - lecture

NOTE this block is a comment
and spans two lines

intro
00:01.000 --> 00:02.500 align:start position:10%
<v Surgeon>Good morning.</v>

00:00:02.500 --> 00:00:05.000
The <c.yellow>hook</c> dissects.
"""


def test_parse_time():
    assert parse_time("00:01:02,500") == 62.5
    assert parse_time("01:02.25") == 62.25
    assert parse_time("3.75") == 3.75
    assert parse_time("1:00:00.000") == 3600
    with pytest.raises(ValueError):
        parse_time("1:2:3:4")


def test_srt_with_bom_crlf_and_tags(tmp_path):
    p = tmp_path / "talk.srt"
    p.write_bytes(SRT.encode("utf-8"))
    t = read_transcript(p)
    assert t.source == "default"
    assert [(s.start, s.end, s.text) for s in t.segments] == [
        (1.0, 3.5, "We open the peritoneum over the triangle."), (3.5, 6.25, "The duct is clipped."),
        (3600.0, 3602.0, "One hour in.")]
    assert [s.line for s in t.segments] == [2, 7, 11]  # the time lines and t.repairs == []


def test_webvtt_notes_ids_settings_and_voice_tags(tmp_path):
    p = tmp_path / "talk.aws.vtt"
    p.write_text(VTT)
    t = read_transcript(p)
    assert t.source == "aws"
    assert [(s.start, s.end, s.text) for s in t.segments] == [(1.0, 2.5, "Good morning."), (2.5, 5.0, "The hook dissects.")]
    (tmp_path / "bad.vtt").write_text("00:01.000 --> 00:02.000\nno header\n")
    with pytest.raises(MedvidError, match=r"bad.vtt:1: a WebVTT file must start with 'WEBVTT'"):
        read_transcript(tmp_path / "bad.vtt")


def test_whisper_json_and_csv(tmp_path):
    j = tmp_path / "talk.whisper.json"
    j.write_text(json.dumps({"text": "...", "segments": [{"id": 0, "start": 0.0, "end": 2.0, "text": " Hello there."},
                                                         {"id": 1, "start": 2.0, "end": 4.0, "text": " Clip it."}]}))
    c = tmp_path / "talk.aws.csv"
    c.write_text('start,end,text\n0.5,2.2,"hello, there"\n00:00:02.2,00:00:04.0,clip it\n')
    assert [s.text for s in read_transcript(j).segments] == ["Hello there.", "Clip it."]
    csv_t = read_transcript(c)
    assert [(s.start, s.end, s.text, s.line) for s in csv_t.segments] == [(0.5, 2.2, "hello, there", 2), (2.2, 4.0, "clip it", 3)]


def test_sources_beside_a_video(tmp_path):
    for name in ["talk.mp4", "talk.whisper.json", "talk.aws.csv", "talk.srt", "talk2.whisper.json", "talk.x.y.srt", "talk.txt"]:
        (tmp_path / name).write_text("")
    found = find_transcripts(tmp_path / "talk.mp4")
    assert {k: v.name for k, v in found.items()} == {"aws": "talk.aws.csv", "default": "talk.srt",
                                                    "whisper": "talk.whisper.json"}
    assert transcript_source(tmp_path / "a.b.c.json") == "c"


def test_repairs_are_documented_and_optional(tmp_path):
    p = tmp_path / "talk.csv"
    p.write_text("start,end,text\n5,8,third\n0,2.5,first\n2,4,second overlaps first\n4.5,5,   \n")
    t = read_transcript(p)
    assert [(s.start, s.end, s.text) for s in t.segments] == [(0, 2, "first"), (2, 4, "second overlaps first"),
                                                              (5, 8, "third")]
    joined = " | ".join(t.repairs)
    assert "out of order" in joined and "overlaps the next segment by 0.500 s" in joined and "empty text" in joined
    assert "talk.csv:5: empty text" in joined  # the blank row is on line 5
    with pytest.raises(MedvidError, match=r"talk.csv:2: segments out of order|talk.csv:\d+: .*repair=False"):
        read_transcript(p, repair=False)


@pytest.mark.parametrize("body, message", [
    ("start,end,text\n0,1,ok\n-1,2,neg\n", r"talk.csv:3: negative time"),
    ("start,end,text\n0,1,ok\n3,2,backwards\n", r"talk.csv:3: span ends before it starts"),
    ("start,end,text\n0,1,ok\nsoon,2,bad time\n", r"talk.csv:3: bad time 'soon'"),
    ("begin,stop,words\n0,1,x\n", r"talk.csv:1: CSV header must have start,end,text"),
])
def test_invalid_csv_names_file_and_line(tmp_path, body, message):
    p = tmp_path / "talk.csv"
    p.write_text(body)
    with pytest.raises(MedvidError, match=message):
        read_transcript(p)


def test_bad_encoding_and_json_name_the_place(tmp_path):
    p = tmp_path / "talk.srt"
    p.write_bytes(b"1\n00:00:00,000 --> 00:00:01,000\nok\n\n2\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n")
    with pytest.raises(MedvidError, match=r"talk.srt:7: not valid UTF-8"):
        read_transcript(p)
    j = tmp_path / "talk.json"
    j.write_text('{"segments": [\n{"start": 0, "end": 1, "text": "a"},\n{"start": 1, "text": "b"}]}')
    with pytest.raises(MedvidError, match=r"talk.json: segment 2: needs numeric start/end"):
        read_transcript(j)
    j.write_text('{"segments": [\n{"start": 0,, }]}')
    with pytest.raises(MedvidError, match=r"talk.json:2: invalid JSON"):
        read_transcript(j)


def test_missing_transcript(tmp_path):
    with pytest.raises(MedvidError, match="talk.srt: transcript not found"):
        read_transcript(tmp_path / "talk.srt")


def test_transcript_longer_than_the_video(tmp_path):
    p = tmp_path / "talk.csv"
    p.write_text("start,end,text\n0,4,first\n4,10.5,second\n")
    t = read_transcript(p)
    clipped = fit_to_duration(t, 10.0, tolerance_s=1.0)  # 0.5 s overrun: clipped, and said so
    assert clipped.segments[-1].end == 10.0 and "clipped" in clipped.repairs[-1]
    with pytest.raises(MedvidError, match=r"talk.csv: transcript runs to 10.50 s but the video lasts 6.00 s \(1 segment"):
        fit_to_duration(t, 6.0, tolerance_s=1.0)


def test_write_whisper_json_round_trip(tmp_path):
    p = tmp_path / "v.whisper.json"
    write_whisper_json(p, [Segment(0, 1.23456, "a b c"), Segment(1.5, 2, "d")], language="en")
    t = read_transcript(p)
    assert t.source == "whisper" and [(s.start, s.end, s.text) for s in t.segments] == [(0, 1.235, "a b c"), (1.5, 2, "d")]
    assert json.loads(p.read_text())["language"] == "en"
