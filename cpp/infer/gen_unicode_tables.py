"""Writes cpp/infer/unicode_tables.inc: the character tables the C++ tokenizer needs to clean and
split text exactly as cris_edge.tokenizer does, read off the very Python modules it uses (the
`regex` module's classes under IGNORECASE, str.lower / str.isspace, ftfy's character maps).

    python cpp/infer/gen_unicode_tables.py [OUTPUT]      (default: next to this script)

tests/test_cpp_infer.py regenerates the file and fails when the committed copy differs (a new
regex / ftfy / Python version changed a table): rerun this script then.
"""

from __future__ import annotations

import sys
from pathlib import Path

import html
import html.entities

import ftfy
import ftfy.fixes
import ftfy.chardata as fc
import regex

MAX_CP = 0x110000
ALL = "".join(chr(c) for c in range(MAX_CP) if not 0xD800 <= c <= 0xDFFF)


def ranges(pattern: str, flags: int = 0) -> list[tuple[int, int]]:
    """[lo, hi] code-point ranges of the characters `pattern` (a class + '+') matches."""
    out = []
    for m in regex.compile(pattern, flags).finditer(ALL):
        lo, hi = ord(m.group()[0]), ord(m.group()[-1])
        if out and out[-1][1] + 1 == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def merge(cps: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(cps):
        if out and out[-1][1] + 1 == c:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def lower_runs() -> tuple[list[tuple[int, int, int, int]], dict[int, str]]:
    """str.lower as runs (lo, hi, stride, delta): cp in lo..hi step stride maps to cp + delta;
    plus the few characters whose lower case is several characters."""
    single, multi = [], {}
    for c in range(MAX_CP):
        if 0xD800 <= c <= 0xDFFF:
            continue
        low = chr(c).lower()
        if len(low) != 1:
            multi[c] = low
        elif ord(low) != c:
            single.append((c, ord(low) - c))
    runs: list[list[int]] = []
    for c, d in single:
        if runs and runs[-1][3] == d and c - runs[-1][1] in (1, 2) and (
                runs[-1][0] == runs[-1][1] or c - runs[-1][1] == runs[-1][2]):
            if runs[-1][0] == runs[-1][1]:
                runs[-1][2] = c - runs[-1][1]
            runs[-1][1] = c
        else:
            runs.append([c, c, 1, d])
    return [tuple(r) for r in runs], multi


def utf8_literal(s: str) -> str:
    return '"' + "".join(f"\\x{b:02x}" for b in s.encode("utf-8")) + '"'


def table(name: str, ctype: str, rows: list[str]) -> str:
    body = ",\n".join("    " + ", ".join(rows[i:i + 6]) for i in range(0, len(rows), 6))
    return f"constexpr {ctype} {name}[] = {{\n{body}\n}};\n"


def pair_rows(items) -> list[str]:
    return [f"{{0x{a:X}, 0x{b:X}}}" for a, b in items]


def entity_rows() -> tuple[list[str], list[str]]:
    """Named character references decoded by the C++ cleaner: those of Latin-1 characters (html5
    names with and without ';', for html.unescape) and ftfy's all-caps variants of them."""
    def latin1(v: str) -> bool:
        return len(v) == 1 and ord(v) <= 0xFF
    names = sorted((n, v) for n, v in html.entities.html5.items() if latin1(v))
    upper = sorted((k[1:], v) for k, v in fc.HTML_ENTITIES.items()
                   if latin1(v) and k[1:] not in html.entities.html5)
    row = lambda n, v: f'{{"{n}", {utf8_literal(v)}}}'
    return [row(n, v) for n, v in names], [row(n, v) for n, v in upper]


def generate() -> str:
    flags = regex.IGNORECASE
    letter, number = ranges(r"\p{L}+", flags), ranges(r"\p{N}+", flags)
    space = ranges(r"\s+")
    other = ranges(r"[^\s\p{L}\p{N}]+", flags)
    classes = [{c for lo, hi in r for c in range(lo, hi + 1)} for r in (letter, number, space, other)]
    assert sum(len(c) for c in classes) == len(set().union(*classes)), "overlapping regex classes"
    # Characters no alternative of the split pattern matches (U+0345, which case-folds to a
    # letter): findall steps over them as over whitespace.
    skipped = merge(sorted({ord(c) for c in ALL} - set().union(*classes)))
    py_space = merge([c for c in range(MAX_CP) if chr(c).isspace()])
    runs, multi = lower_runs()
    assert list(multi) == [0x130] and multi[0x130] == "i\u0307", f"unexpected multi-character lower cases {multi}"
    folds = [(ord(m.group()), ord(a)) for a in "abcdefghijklmnopqrstuvwxyz"
             for m in regex.finditer(a, ALL, flags) if m.group() != a]
    quotes1 = [ord(c) for c in ALL if fc.SINGLE_QUOTE_RE.fullmatch(c)]
    quotes2 = [ord(c) for c in ALL if fc.DOUBLE_QUOTE_RE.fullmatch(c)]
    # ftfy's fix_latin_ligatures then fix_character_width: two str.translate maps with
    # disjoint keys, so one table.
    assert not set(fc.LIGATURES) & set(fc.WIDTH_MAP)
    replace = sorted({**fc.LIGATURES, **fc.WIDTH_MAP}.items())
    named, ftfy_upper = entity_rows()
    charref_fix = sorted((k, ord(v)) for k, v in html._invalid_charrefs.items() if len(v) == 1)
    assert len(charref_fix) == len(html._invalid_charrefs)
    c1 = [(c, ord(ftfy.fixes.fix_c1_controls(chr(c)))) for c in range(0x80, 0xA0)]
    parts = [
        "// Generated by cpp/infer/gen_unicode_tables.py from Python "
        f"{sys.version.split()[0]}, regex {regex.__version__}, ftfy {ftfy.__version__}. Do not edit.\n"
        "// Included by unicode.cpp only. Ranges are inclusive [lo, hi] code points, sorted.\n",
        table("kLetter", "CpRange", pair_rows(letter)),
        table("kNumber", "CpRange", pair_rows(number)),
        table("kRegexSpace", "CpRange", pair_rows(space)),
        table("kSplitSkip", "CpRange", pair_rows(skipped)),
        table("kPySpace", "CpRange", pair_rows(py_space)),
        table("kLowerRuns", "LowerRun", [f"{{0x{a:X}, 0x{b:X}, {s}, {d}}}" for a, b, s, d in runs]),
        table("kCaseFoldAscii", "CpRange", pair_rows(folds)),
        table("kSingleQuote", "CpRange", pair_rows(merge(quotes1))),
        table("kDoubleQuote", "CpRange", pair_rows(merge(quotes2))),
        table("kControl", "CpRange", pair_rows(merge(list(fc.CONTROL_CHARS)))),
        table("kC1Fix", "CpRange", pair_rows(c1)),
        table("kHtmlNamed", "NameString", named),
        table("kFtfyUpperNamed", "NameString", ftfy_upper),
        table("kCharRefFix", "CpRange", pair_rows(charref_fix)),
        table("kCharRefDrop", "CpRange", pair_rows(merge(list(html._invalid_codepoints)))),
        table("kFtfyReplace", "CpString", [f"{{0x{a:X}, {utf8_literal(b)}}}" for a, b in replace]),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("unicode_tables.inc")
    out.write_text(generate())
    print(f"wrote {out}")
