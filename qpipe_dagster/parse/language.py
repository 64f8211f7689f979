"""Light offline language guess: writing system first, then stopword overlap.

Why not a model: language only routes text (filters, per-language analysis); a guess from
script + the most frequent function words is right for ordinary article text, costs microseconds
and needs no download. Declared ``<html lang>`` is used when the text is too short to judge.
"""

from __future__ import annotations

import re
from collections import Counter


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the of and to in is that for it was on with as are be by this at from have has not "
        "but or an they which you his her their were been will would"
    ),
    "de": _words(
        "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als "
        "auch es an werden aus er hat dass sie nach wird bei einer um noch wie über"
    ),
    "fr": _words(
        "le la les de des et un une du en est que qui dans pour pas sur au par plus ce il "
        "elle sont avec ont été aux mais ou leur nous vous cette"
    ),
    "es": _words(
        "el la de que y en los se del las un por con no una su para es al lo como más pero "
        "sus le ya fue este ha sido entre cuando muy sin sobre"
    ),
    "pt": _words(
        "o a de que e do da em um para é com não uma os no se na por mais as dos como mas "
        "foi ao ele das tem à seu sua ou ser quando muito há nos já está também"
    ),
    "it": _words(
        "il di che e la per un in è del non una sono della le si con da gli al dei nel alla "
        "anche come più ma ha questo delle essere lo sua suo"
    ),
    "nl": _words(
        "de het een en van in is dat op te zijn met voor niet die aan er ook als bij door "
        "maar om hij ze nog uit wordt werd heeft naar dan"
    ),
    "ru": _words(
        "и в не на что с по он как это к из у за от о так но же все его она был быть для "
        "был было они мы при только также"
    ),
    "uk": _words(
        "і в не на що з у за від як це до та але його вона був бути для було вони ми при "
        "також які який якщо"
    ),
    "pl": _words(
        "i w nie na że z się do jest to jak o ale po co tak od przez za dla jego już są być "
        "może tylko też oraz który która"
    ),
    "sv": _words(
        "och i att det som en på är av för med till den har de inte om ett han men var sig "
        "från vi så kan när"
    ),
    "tr": _words(
        "ve bir bu da de için ile olarak çok daha gibi en olan ama ne kadar sonra her ya "
        "değil ancak ise"
    ),
    "id": _words(
        "yang dan di ini itu dengan untuk dari dalam tidak akan pada juga ke karena ada "
        "oleh atau sudah bisa mereka saat"
    ),
}

# inverted index: word -> languages it is a stopword of (one dict lookup per word when scoring)
_WORD_LANGUAGES: dict[str, tuple[str, ...]] = {}
for _lang, _stop in _STOPWORDS.items():
    for _word in _stop:
        _WORD_LANGUAGES[_word] = (*_WORD_LANGUAGES.get(_word, ()), _lang)

_WORD = re.compile(r"[^\W\d_]+")
_HIRAGANA_KATAKANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
)
_MIN_WORDS = 20
_SAMPLE_CHARS = 3000
_NON_LATIN = re.compile(r"[^\x00-\u024f\u2000-\u206f]")


def normalize_language_tag(tag: str | None) -> str | None:
    """``"en-US"`` / ``"en_gb"`` -> ``"en"``; None for empty or malformed tags."""
    if not tag:
        return None
    primary = re.split(r"[-_,;\s]", tag.strip().lower(), maxsplit=1)[0]
    return primary if re.fullmatch(r"[a-z]{2,3}", primary) else None


def _script_language(sample: str) -> str | None:
    if len(_NON_LATIN.findall(sample)) < 10:
        return None  # Latin script: stopwords decide
    letters = len(_WORD.findall(sample)) or 1
    if len(_HIRAGANA_KATAKANA.findall(sample)) >= 10:
        return "ja"
    if len(_HANGUL.findall(sample)) >= 10:
        return "ko"
    if len(_HAN.findall(sample)) >= 10:
        return "zh"
    for lang, pattern in _SCRIPTS:
        if len(pattern.findall(sample)) >= max(10, letters // 4):
            return lang
    return None


def detect_language(text: str, declared: str | None = None) -> str | None:
    """Guess an ISO 639-1 code for ``text``; fall back to the declared tag when unsure."""
    declared_norm = normalize_language_tag(declared)
    sample = text[:_SAMPLE_CHARS]
    by_script = _script_language(sample)
    if by_script:
        return by_script
    words = [w.lower() for w in _WORD.findall(sample)]
    if len(words) < _MIN_WORDS:
        return declared_norm
    counts = Counter(words)
    scores = {lang: sum(counts[w] for w in stop) / len(words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=scores.__getitem__)
    ranked = sorted(scores.values(), reverse=True)
    # Closely related languages share function words; when the margin is thin trust the page.
    if ranked[0] < 0.08 or (ranked[0] - ranked[1] < 0.02 and declared_norm in scores):
        return declared_norm or (best if ranked[0] >= 0.08 else None)
    return best
