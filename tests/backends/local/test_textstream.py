"""Stop sequences never leak, also across token boundaries; multi-byte characters are never split."""

from __future__ import annotations

import json
from typing import Any

import httpx
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


def test_a_character_cut_by_the_end_of_generation_is_dropped_but_its_entry_is_not() -> None:
    smile = "\N{GRINNING FACE}".encode()
    text, entries, stopped = feed(TextStream([]), [b"ok ", smile[:2], smile[2:3]])
    assert (text, entries, stopped) == ("ok ", [0, 1, 2], False)


def test_malformed_bytes_inside_the_text_are_still_replaced() -> None:
    text, entries, _ = feed(TextStream([]), [b"a\xff", b"b"])
    assert (text, entries) == ("a\ufffdb", [0, 1])


EMOJI = {"model": "gpt-4", "messages": [{"role": "user", "content": "Reply with only emoji"}], "max_tokens": 7}


def _plain(http: httpx.Client, seed: int) -> tuple[str, list[dict[str, Any]], int]:
    r = http.post("/v1/chat/completions", json={**EMOJI, "seed": seed, "logprobs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    return choice["message"]["content"], choice["logprobs"]["content"], body["usage"]["completion_tokens"]


def _streamed(http: httpx.Client, seed: int) -> tuple[str, list[dict[str, Any]], int]:
    payload = {**EMOJI, "seed": seed, "logprobs": True, "stream": True, "stream_options": {"include_usage": True}}
    text, usage = "", -1
    logprobs: list[dict[str, Any]] = []
    with http.stream("POST", "/v1/chat/completions", json=payload) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
                logprobs += (choice.get("logprobs") or {}).get("content") or []
    return text, logprobs, usage


@pytest.mark.parametrize("read", [_plain, _streamed], ids=["plain", "streamed"])
def test_max_tokens_inside_a_character_never_sends_half_of_it(http: httpx.Client, read: Any) -> None:
    cut = 0
    for seed in range(8):
        text, logprobs, completion_tokens = read(http, seed)
        raw = b"".join(bytes(t["bytes"]) for t in logprobs)
        whole = raw.decode("utf-8", errors="ignore")
        assert "\ufffd" not in text, (seed, text)
        assert completion_tokens == len(logprobs)  # the cut token is counted and has its logprob entry
        assert raw.startswith(text.encode()) and text == whole, (seed, text, raw)
        cut += len(raw) > len(text.encode())
    assert cut, "no seed cut inside a character: the test proves nothing"


def _is_whole_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
