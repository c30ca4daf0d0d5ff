"""Stop sequences never leak, also across token boundaries; multi-byte characters are never split."""

from __future__ import annotations

import pytest

from chatgate.backends.local.llama import GGUFModel
from chatgate.backends.local.loader import embedded_model_path
from chatgate.backends.local.textstream import TextStream


def feed(stream: TextStream[int], pieces: list[bytes]) -> tuple[str, list[int], bool]:
    text, entries, stopped = "", [], False
    for i, piece in enumerate(pieces):
        out = stream.push(piece, i)
        text += out.text
        entries += out.entries
        if out.stopped:
            stopped = True
            break
    if not stopped:
        rest = stream.finish()
        text += rest.text
        entries += rest.entries
    return text, entries, stopped


def test_without_stops_everything_is_released_at_once() -> None:
    stream: TextStream[int] = TextStream([])
    out = stream.push(b"Hello", 0)
    assert out.text == "Hello" and out.entries == [0] and not out.stopped


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        ([b"Hello", b" wor", b"ld", b"!"], ["world"], "Hello "),
        ([b"Hello", b" wor", b"ld", b"!"], ["o w"], "Hell"),
        ([b"ab", b"c", b"de", b"f"], ["cd", "zz"], "ab"),
        ([b"a", b"b", b"c"], ["bc", "abc"], ""),
        ([b"END"], ["END"], ""),
    ],
)
def test_stop_sequences_are_cut_even_when_they_straddle_tokens(
    pieces: list[bytes], stops: list[str], expected: str
) -> None:
    text, _, stopped = feed(TextStream(stops), pieces)
    assert stopped
    assert text == expected


def test_text_that_only_looks_like_a_stop_start_is_released_at_the_end() -> None:
    stream: TextStream[int] = TextStream(["STOP"])
    first = stream.push(b"go ST", 0)
    assert first.text == "go " and first.entries == []
    second = stream.push(b"ART", 1)
    assert second.text == "START" and second.entries == [0, 1]
    assert stream.finish().text == ""


def test_held_back_prefix_is_released_when_generation_ends() -> None:
    text, entries, stopped = feed(TextStream(["STOP"]), [b"ab", b"ST"])
    assert (text, entries, stopped) == ("abST", [0, 1], False)


def test_entries_of_tokens_inside_the_stop_sequence_are_dropped() -> None:
    _, entries, stopped = feed(TextStream(["world"]), [b"Hello", b" wor", b"ld"])
    assert stopped
    assert entries == [0]


def test_multibyte_characters_split_across_tokens_are_never_emitted_half() -> None:
    model = GGUFModel(embedded_model_path())
    try:
        tokens = model.tokenize("日本語 ok", add_special=False)
        pieces = [model.piece(t) for t in tokens]
        assert any(len(p) and not _is_whole_utf8(p) for p in pieces), "the test needs split characters"
        stream: TextStream[int] = TextStream([])
        released = [stream.push(p, i).text for i, p in enumerate(pieces)]
        released.append(stream.finish().text)
        assert all("\ufffd" not in r for r in released)
        assert "".join(released) == "日本語 ok"
    finally:
        model.close()


def test_a_stop_sequence_made_of_multibyte_characters_is_found() -> None:
    pieces = ["日本語".encode()[:4], "日本語".encode()[4:], b"!"]
    text, _, stopped = feed(TextStream(["本語"]), pieces)
    assert stopped and text == "日"


def _is_whole_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
