"""Decoding X text properties: UTF8_STRING, STRING (Latin-1) and COMPOUND_TEXT.

Pure. COMPOUND_TEXT (ISO 2022 with X's extensions) is what xterm, Motif and older toolkits
put in ``WM_NAME`` and selections: it starts in ASCII (GL) + Latin-1 (GR) and switches
character sets with escape sequences. Handled: the ISO 8859 right halves (``ESC - F``), the
94-character GL sets (``ESC ( F``), the 94^2 sets of Chinese, Japanese and Korean (``ESC $ (
F`` / ``ESC $ ) F``), UTF-8 segments (``ESC % G`` … ``ESC % @``, what xterm writes for emoji
and right-to-left text), extended segments (``ESC % / n M L name STX``) and the direction
markers (ignored). Anything not understood decodes as U+FFFD, never an exception.
"""

from __future__ import annotations

import codecs

__all__ = ["decode_compound_text", "decode_property"]

_ESC = 0x1B
#: Final byte of ``ESC - F`` (96-character GR set) -> codec.
_GR96 = {ord("A"): "latin-1", ord("B"): "iso8859-2", ord("C"): "iso8859-3",
         ord("D"): "iso8859-4", ord("F"): "iso8859-7", ord("G"): "iso8859-6",
         ord("H"): "iso8859-8", ord("L"): "iso8859-5", ord("M"): "iso8859-9",
         ord("V"): "iso8859-10", ord("Y"): "iso8859-13", ord("_"): "iso8859-14",
         ord("b"): "iso8859-15", ord("f"): "iso8859-16", ord("T"): "tis-620"}
#: Final byte of ``ESC $ ( F`` / ``ESC $ ) F`` (94^2 sets) -> EUC codec (bytes | 0x80).
_MB94 = {ord("A"): "gb2312", ord("B"): "euc_jp", ord("C"): "euc_kr"}


def _decode(data: bytes, codec: str) -> str:
    try:
        return codecs.decode(data, codec, "replace")
    except LookupError:
        return "\ufffd" * bool(data)


def decode_compound_text(data: bytes) -> str:
    """Decode COMPOUND_TEXT bytes."""
    out: list[str] = []
    gl, gr = "ascii", "latin-1"  # the initial state
    gl_mb = gr_mb = ""
    i, n = 0, len(data)
    run = bytearray()

    def flush() -> None:
        if not run:
            return
        chunk = bytes(run)
        run.clear()
        # split into GL and GR runs, each in its own set
        j = 0
        while j < len(chunk):
            high = chunk[j] >= 0x80
            k = j
            while k < len(chunk) and (chunk[k] >= 0x80) == high:
                k += 1
            part = chunk[j:k]
            mb = gr_mb if high else gl_mb
            if mb:
                out.append(_decode(bytes(b | 0x80 for b in part), mb))
            elif high:
                out.append(_decode(part, gr))
            else:
                out.append(_decode(part, gl) if gl != "ascii" else part.decode("ascii",
                                                                                "replace"))
            j = k

    while i < n:
        b = data[i]
        if b != _ESC:
            if b in (0x09, 0x0A) or b >= 0x20:
                run.append(b)
            i += 1
            continue
        flush()
        rest = data[i + 1:i + 4]
        if rest[:2] == b"%G":  # UTF-8 until ESC % @
            end = data.find(b"\x1b%@", i + 3)
            end = n if end < 0 else end
            out.append(data[i + 3:end].decode("utf-8", "replace"))
            i = end + 3
        elif rest[:2] == b"%/" and i + 6 <= n:  # extended segment: M L (length) name STX
            length = (data[i + 4] & 0x7F) * 128 + (data[i + 5] & 0x7F)
            seg = data[i + 6:i + 6 + length]
            name, _, body = seg.partition(b"\x02")
            out.append(_decode(body, name.decode("ascii", "replace").lower()))
            i += 6 + length
        elif rest[:1] == b"-" and len(rest) >= 2:
            gr, gr_mb = _GR96.get(rest[1], "latin-1"), ""
            i += 3
        elif rest[:1] == b"(" and len(rest) >= 2:
            gl, gl_mb = "ascii", ""  # ASCII, JIS-Roman: ASCII is close enough for titles
            i += 3
        elif rest[:2] in (b"$(", b"$)") and len(rest) >= 3:
            codec = _MB94.get(rest[2], "")
            if rest[1:2] == b"(":
                gl_mb = codec
            else:
                gr_mb = codec
            i += 4
        elif rest[:1] == b"[":  # direction: ESC [ 1 ] / ESC [ 2 ] / ESC [ ]
            end = data.find(b"]", i)
            i = n if end < 0 else end + 1
        else:
            out.append("\ufffd")
            i += 2
    flush()
    return "".join(out)


def decode_property(value: bytes | str, type_name: str) -> str:
    """Decode a text property's value by its type atom's name."""
    if isinstance(value, str):
        return value
    if type_name == "UTF8_STRING":
        return value.decode("utf-8", "replace")
    if type_name == "COMPOUND_TEXT":
        return decode_compound_text(value)
    if type_name == "STRING":
        return value.decode("latin-1")
    return value.decode("utf-8", "replace")  # TEXT and unknown types: best effort
