"""The byte-level BPE alphabet GPT-2 and CLIP tokenizers share (transformers 5 no longer exports it)."""

from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
    """The reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))
