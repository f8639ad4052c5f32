"""The sentence and target noun phrase that Global-Local CLIP reads from a referring expression.

With spaCy (the ``[zeroshot]`` extra) and a trained English pipeline (``en_core_web_sm`` by
default; the official code uses ``en_core_web_lg``), as the official code does:

1. the sentence is lower-cased, parsed, and its token texts re-joined by single spaces
   (``"man's hat,"`` becomes ``"man 's hat ,"``); that text is what CLIP reads;
2. the re-joined text is parsed again; its root is the last token that is its own head;
3. the noun phrase is the noun chunk holding the root; else, when the root's first (leftmost)
   child is in a noun chunk, that chunk; else the whole sentence.

Without spaCy, or without the pipeline (then a warning is logged once per pipeline name and
`ParsedText.parser` says ``"rules"``), a rule-based extractor stands in for the parse: the words
of the lower-cased sentence up to the first word that starts what follows a head noun (a
preposition, a relative word or conjunction, a form of "be"/"have", a verb in -ing that is not
a known noun, or punctuation); when the sentence starts with such a word, the whole sentence.
It agrees with spaCy on phrases shaped "the red car on the left" or "a man holding a cup", and
fails where the head comes late ("closest of the two cats" gives "closest") or an -ing
word is the noun ("the painting" is kept only because it is listed).
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

_log = logging.getLogger(__name__)

#: The spaCy pipeline used unless another is named (the official code loads ``en_core_web_lg``).
DEFAULT_PIPELINE = "en_core_web_sm"

_WORDS = re.compile(r"[^\W_]+(?:['’][^\W_]+)?|[^\w\s]|_")
#: Words that end a head noun phrase: what comes after them describes or locates the head.
_BOUNDARY = frozenset("""
    in on at with of near behind beside besides next to by under underneath below beneath above over
    between among around across along against inside outside into onto from for toward towards through
    without within past via like than except
    that which who whom whose where when while whereas
    and or but nor so because although though if
    is are was were be been being am 's has have had
    """.split())
#: Words ending in -ing that are nouns, not verbs (the -ing rule keeps them).
_ING_NOUNS = frozenset("""
    ceiling building clothing painting ring king thing wing string spring something anything nothing
    everything pudding icing railing awning frosting stuffing sibling swing sling bedding topping
    sapling duckling seedling earring stocking evening morning wedding drawing
    """.split())


@dataclass(frozen=True)
class ParsedText:
    """sentence: the text CLIP reads; noun_phrase: the target phrase; parser: ``"spacy:<name>"``
    or ``"rules"``."""

    sentence: str
    noun_phrase: str
    parser: str


def parse_text(text: str, pipeline: Optional[str] = DEFAULT_PIPELINE) -> ParsedText:
    """The sentence and noun phrase of ``text`` (see the module docstring). ``pipeline``: a spaCy
    pipeline name, or None for the rule-based extractor. ValueError for an empty text."""
    if not isinstance(text, str):
        raise ValueError(f"the sentence must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"the sentence is empty: {text!r}")
    nlp = _spacy(pipeline) if pipeline else None
    if nlp is None:
        sentence = " ".join(text.lower().split())
        return ParsedText(sentence, rule_noun_phrase(sentence), "rules")
    sentence = " ".join(token.text for token in nlp(text.lower()) if token.text != " ")
    return ParsedText(sentence, spacy_noun_phrase(nlp(sentence)), f"spacy:{pipeline}")


def noun_phrase(text: str, pipeline: Optional[str] = DEFAULT_PIPELINE) -> str:
    """The target noun phrase of ``text`` (`parse_text`)."""
    return parse_text(text, pipeline).noun_phrase


def spacy_noun_phrase(doc: Any) -> str:
    """The official rule on a parsed spaCy ``Doc``: the noun chunk holding the root (the last
    token that is its own head), else the chunk of the root's first child, else the whole text."""
    if len(doc) == 0:
        raise ValueError("the sentence has no tokens")
    chunk_of = {i: chunk for chunk in doc.noun_chunks for i in range(chunk.start, chunk.end)}
    root = [token for token in doc if token.head.i == token.i][-1]
    if root.i in chunk_of:
        return chunk_of[root.i].text
    children = list(root.children)
    if children and children[0].i in chunk_of:
        return chunk_of[children[0].i].text
    return doc.text


def rule_noun_phrase(sentence: str) -> str:
    """The rule-based stand-in for the parse (module docstring) on a lower-cased sentence."""
    words = _WORDS.findall(sentence.lower())
    head = []
    for word in words:
        if word in _BOUNDARY or not word[0].isalnum() or (word.endswith("ing") and len(word) > 4
                                                           and word not in _ING_NOUNS):
            break
        head.append(word)
    return " ".join(head) if head else sentence


@lru_cache(maxsize=4)
def _spacy(pipeline: str) -> Optional[Any]:
    """The loaded spaCy pipeline, or None (logged once) when spaCy or the pipeline is missing."""
    if importlib.util.find_spec("spacy") is None:
        _log.warning("spaCy is not installed (pip install 'cris-edge[zeroshot]'): noun phrases come from "
                     "the rule-based extractor")
        return None
    import spacy

    try:
        return spacy.load(pipeline)
    except OSError:
        _log.warning("the spaCy pipeline %r is not installed (python -m spacy download %s): noun phrases "
                     "come from the rule-based extractor", pipeline, pipeline)
        return None
