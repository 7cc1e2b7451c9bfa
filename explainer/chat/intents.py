"""Rule-based understanding of a chat message: which answer is wanted, about which class, method, layer or image.

No language model and no network: the message is normalised, misspelt keywords are corrected against a small
vocabulary (``confidnt`` → ``confident``), the details any message may carry are collected (a class, methods, an
image reference, a model, a count), and rules of regular expressions pick the intent. Class names are found in the
original words (never "corrected"), so a label the vocabulary does not know survives intact and is resolved later
with :func:`explainer.labels.match_label`.

This module holds the rules; which intent each rule stands for, in which order they are tried, and which answer
each intent gets, is registered in one place: :mod:`explainer.chat.questions`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from explainer.cams import METHODS, spellings
from explainer.labels import normalize as normalize_label
from explainer.prose import one_line
from explainer.segment import SEGMENTERS

# Intent names (the registry in explainer/chat/questions.py gives each its rules and its answer).
WHAT = "what"
WHY = "why"
CONFIDENCE = "confidence"
CLASS = "class"
REGION = "region"
TRUST = "trust"
COMPARE_CLASSES = "compare_classes"
COMPARE_METHODS = "compare_methods"
USE_METHOD = "use_method"
LAYERS = "layers"
USE_LAYER = "use_layer"
TEACH = "teach"
HELP = "help"
MODEL = "model"
SETTING = "setting"
IMAGE = "image"
EXPECTED = "expected"
GREETING = "greeting"
CONTRAST = "contrast"
AGAINST = "against"
WHAT_IF = "what_if"
LEGEND = "legend"
UNKNOWN = "unknown"

#: Longest question that is parsed; the rest is ignored (a 10,000-character paste must stay fast and harmless).
MAX_QUESTION_CHARS = 500

#: Optional separators between the characters of a method's name ("Grad CAM", "x-grad-cam", "hi_res_cam").
_SEP = r"[\s\-_]*"

_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6}

def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words the rules look for; a misspelt word within edit distance of one of them is read as that word.
VOCABULARY = _wordset("""
why explain explanation reason where looking look focus focusing attention heatmap saliency evidence decide
confident confidence sure certain certainty probability probabilities likely percent chance doubt calibrated
trust trustworthy reliable reliability robust faithful faithfulness sanity check verify validate believe
compare comparison versus second guess runner alternatives alternative candidates side
method methods layer layers depth depths deeper earlier shallower later feature
region segment segmentation bounding outline contour crop highlight localize localization coordinates
show what which help model network classifier switch previous first original image picture photo
opacity transparency colormap colour color threshold predict prediction predictions classify class classes
label labels identify recognize about works work hello thanks thank teach tutorial gradient gradients weights
channels default automatic instead object shortcut highlighted transparent opaque hold hide occlude occlusion
deletion insertion mask map maps heatmaps overlay overlays colors colours region regions spot spots area part
parts layer otsu grabcut cutout rather cover against negative legend scale blurred
""")

# Common short words that must never be "corrected" into a keyword.
_KEEP = _wordset("""
this that these those with from have does done about into than then them they their there here your yours
what when were will would could should might must more most much many some such only also just like make
made over very well even ever each both been being same other another again please tell give know mean
""")

# A phrase made of these alone refers to the image or the answer, not to a class ("explain this", "is it").
_DEICTIC = _wordset("""
it its it's this that these those here there me you yourself him her them one image picture photo pic
prediction predictions decision result results answer class label top guess map heatmap overlay again more
further please now all everything anything something so the a an why how what please model thing object
""")

_FILLER_TAIL = re.compile(
    r"(?:\s+(?:instead|then|too|either|at all|please|here|now|really|exactly|in (?:the|this|that) "
    r"(?:image|picture|photo|pic)|in it|there|class|one))+$"
)
_ARTICLE = re.compile(r"^(?:(?:an?|the|some|class|label|category)\s+)+")


@dataclass(frozen=True)
class Vocab:
    """What the current conversation can refer to by name (all optional)."""

    labels: Sequence[str] = ()
    layers: Sequence[str] = ()
    models: Sequence[str] = ()
    colormaps: Sequence[str] = ()


@dataclass(frozen=True)
class Intent:
    """What a message asks for.

    Attributes
    ----------
    name : str
        One of :data:`explainer.chat.INTENTS`.
    text : str
        The question as typed, cleaned to one line and cut to :data:`MAX_QUESTION_CHARS`.
    target : str or None
        A class the user named (as typed, not yet resolved to an index), or ``"@2"`` for "the second guess".
    explicit_target : bool
        True when the class came from a class question ("why not X", "what about X"), False when it was only
        spotted in a message about something else.
    method, methods : str or None, tuple of str
        CAM method key(s) named (``gradcam++``, ...).
    layer : str or None
        Layer name or 1-based spatial-layer number as typed, ``"auto"`` for the default layer.
    layer_step : int
        −1 for "an earlier layer", +1 for "a deeper layer".
    image_ref : str or None
        ``previous``, ``first``, ``latest`` or a 1-based image number.
    model : str or None
        A model name from the vocabulary.
    count : int or None
        How many classes ("top 3").
    setting, value :
        A setting to change (``opacity``, ``colormap``, ``threshold``, ``top_k``) and its value; a string
        ``"+0.15"``/``"-0.1"`` is a change relative to the current opacity or threshold.
    typed : str or None
        A number given for a setting, exactly as typed (``"-5 %"``, ``"9e99"``), so a refusal can quote it; ``value``
        is then what it reads as (a fraction for opacity and threshold), or None when it is not a plain number
        (an exponent): :func:`explainer.chat.session.setting_number` checks both.
    region : str or None
        Where the user expects the evidence, as typed and tidied for
        :func:`explainer.evaluation.groundtruth.region_from_text`: four numbers (``"40, 60, 80, 80"``, or
        ``"corners 10, 10, 50, 50"`` when the message said so) or place words of the 3×3 grid (``"lower left"``).
        None in an "is it looking where it should?" that names no place. For ``what_if`` the part to cover, also
        ``"highlighted"`` (the map's own box).
    versus : str or None
        The class a contrast question sets against ``target`` ("why A rather than B?"), as typed, or ``"@2"``.
    keep : bool
        ``what_if``: keep only ``region`` and cover the rest ("keep only the centre").
    fill : str or None
        ``what_if``: what covers the region when the message says (``blur``, ``mean``, ``black``); None: the default.
    """

    name: str
    text: str = ""
    target: str | None = None
    explicit_target: bool = False
    method: str | None = None
    methods: tuple[str, ...] = ()
    layer: str | None = None
    layer_step: int = 0
    image_ref: str | None = None
    model: str | None = None
    count: int | None = None
    setting: str | None = None
    value: float | str | None = None
    typed: str | None = None
    region: str | None = None
    versus: str | None = None
    keep: bool = False
    fill: str | None = None
    corrected: str = field(default="", repr=False)


@dataclass
class Message:
    """A message in two parallel forms: original words (for class names) and corrected words (for rules)."""

    raw: str  # cleaned, original case
    words: list[str]  # lower-case original tokens
    fixed: list[str]  # tokens after keyword spelling correction
    lowered: str = ""  # raw in lower case, signs and exponents intact (numbers are read from it)
    ends: list[int] = field(default_factory=list)  # where each token ends in ``lowered``

    @property
    def text(self) -> str:
        return " ".join(self.fixed)

    def original_span(self, start: int, end: int) -> str:
        """The original words under characters ``start:end`` of :attr:`text` (tokens are 1:1)."""
        first = self.text[:start].count(" ") if start else 0
        last = self.text[:end].count(" ")
        return " ".join(self.words[first : last + 1])

    def after(self, end: int) -> str:
        """The lower-cased original text after the token ending at character ``end`` of :attr:`text`."""
        token = self.text[:end].count(" ")
        return self.lowered[self.ends[token]:] if token < len(self.ends) else ""


#: ``rule(message, vocab, details) -> fields or None``: see the rules section below.
Rule = Callable[[Message, Vocab, dict], "dict | None"]


def interpret(text: str, vocab: Vocab | None, rules: Sequence[tuple[str, Rule]]) -> Intent:
    """Read one chat message with ``rules`` (``(intent name, rule)`` pairs, tried in order: the first match wins).

    :func:`explainer.chat.parse` calls this with the chat's registry of questions.

    Parameters
    ----------
    text : str
        The user's message (any length; only the first :data:`MAX_QUESTION_CHARS` characters are read).
    vocab : Vocab, optional
        Labels, layers, models and colormaps the message may name.
    rules : sequence of (str, Rule)

    Returns
    -------
    Intent
        ``UNKNOWN`` when nothing matched; an empty message gives ``UNKNOWN`` with empty ``text``.
    """
    vocab = vocab or Vocab()
    message = _read(text, vocab)
    if not message.words:
        return Intent(HELP if message.raw.strip(" ?") == "" and "?" in message.raw else UNKNOWN, text=message.raw)
    details = _details(message, vocab)
    for name, rule in rules:
        extra = rule(message, vocab, details)
        if extra is not None:
            return Intent(name, **{**details, **extra})
    return Intent(UNKNOWN, **details)


# ----------------------------------------------------------------------------- normalising


def _read(text: str, vocab: Vocab) -> Message:
    raw = one_line(text or "", MAX_QUESTION_CHARS).replace("’", "'").replace("‘", "'")
    lowered = raw.lower().replace("“", '"').replace("”", '"')
    tokens = [(m.group().strip(".'\"-:;,!"), m.end()) for m in re.finditer(r"[\w+/.'\-:]+|\?", lowered)]
    tokens = [(w, end) for w, end in tokens if w and w != "?"]
    words = [w for w, _end in tokens]
    protected = _label_words(tuple(vocab.labels))
    fixed = [word if word in protected else _correct(word) for word in words]
    return Message(raw, words, fixed, lowered, [end for _w, end in tokens])


@functools.lru_cache(maxsize=8)
def _label_names(labels: tuple[str, ...]) -> dict[str, str]:
    """Normalised label → label (the first one wins if two normalise alike)."""
    names: dict[str, str] = {}
    for label in labels:
        names.setdefault(normalize_label(label), label)
    return names


@functools.lru_cache(maxsize=8)
def _label_words(labels: tuple[str, ...]) -> frozenset[str]:
    """Words of the labels: a class name is never "corrected" into a keyword."""
    return frozenset(word for label in labels for word in normalize_label(label).split())


@functools.lru_cache(maxsize=4096)
def _correct(word: str) -> str:
    """The keyword ``word`` was probably meant to be, or ``word`` itself."""
    if len(word) < 4 or word in VOCABULARY or word in _KEEP or not word.isalpha():
        return word
    # One wrong letter in a short word is a bigger change: "maps" is not "mask", "square" is not "sure".
    close = difflib.get_close_matches(word, VOCABULARY, n=1, cutoff=0.85 if len(word) <= 6 else 0.75)
    return close[0] if close else word


# ----------------------------------------------------------------------------- details found in any message


def _details(message: Message, vocab: Vocab) -> dict:
    methods = find_methods(message.raw)
    return {
        "text": message.raw,
        "corrected": message.text,
        "target": _mentioned_label(message, vocab.labels),
        "methods": tuple(methods),
        "method": methods[0] if len(methods) == 1 else None,
        "image_ref": _image_ref(message.text),
        "model": _model_name(message, vocab.models),
        "count": _count(message.text),
    }


def find_methods(text: str) -> list[str]:
    """Method keys named in ``text``, in order of appearance.

    Every spelling a registered method declares (:func:`explainer.cams.spellings`) is looked for with separators
    optional between its characters; where two matches overlap the longer one wins (``grad-cam++`` is not
    ``grad-cam``, ``x-grad-cam`` is not ``grad-cam``), so the registry's order does not matter.
    """
    lowered = text.lower()
    matches = [(match.start(), match.end(), key) for key, pattern in _method_patterns(_registry_key())
               for match in re.finditer(pattern, lowered)]
    matches.sort(key=lambda m: (m[0] - m[1], m[0]))  # longest first
    taken: list[tuple[int, int, str]] = []
    for start, end, key in matches:
        if all(end <= s or e <= start for s, e, _k in taken):
            taken.append((start, end, key))
    return list(dict.fromkeys(key for _s, _e, key in sorted(taken)))


def _registry_key() -> tuple:
    """What the method patterns depend on (a method registered at run time changes it)."""
    return tuple((key, spellings(cls)) for key, cls in METHODS.items())


#: "segment with otsu", "use the threshold mask", "switch to grabcut", "soft grabcut segmentation": a segmentation
#: method named with a word that asks for it. The threshold method only by its mask's name ("the threshold
#: mask", "thresholded", "heat region"), since "threshold" alone is the localization setting.
_SEGMENT_ASKED = re.compile(r"\b(?:use|using|switch|try|with|by|set|segment\w*|mask|cut\s?out|method)\b")
_THRESHOLD_MASK = re.compile(r"\bthreshold(?:ed)? (?:mask|segmentation|region|method)\b|\bthresholded\b|"
                             r"\bheat (?:region|mask|blob)\b|\bsegment\w* (?:with|by|using) (?:the )?threshold\b")


def find_segmenter(text: str) -> str | None:
    """The segmentation method (:data:`explainer.segment.SEGMENTERS` key) a message asks for, or None."""
    lowered = text.lower()
    if _THRESHOLD_MASK.search(lowered):
        return "threshold"
    if not _SEGMENT_ASKED.search(lowered):
        return None
    named = [(match.start() - match.end(), key) for key, pattern in _segmenter_patterns()
             for match in re.finditer(pattern, lowered)]
    return min(named)[1] if named else None  # the longest spelling: "soft grabcut" is not "grabcut"


@functools.lru_cache(maxsize=1)
def _segmenter_patterns() -> list[tuple[str, re.Pattern]]:
    spellings = [(key, name) for key, cls in SEGMENTERS.items() if key != "threshold"
                 for name in (cls.name, cls.display_name, *cls.aliases) if name not in ("refine", "refined")]
    return _method_patterns(tuple((key, (name,)) for key, name in spellings))


@functools.lru_cache(maxsize=4)
def _method_patterns(registry: tuple) -> list[tuple[str, re.Pattern]]:
    patterns = []
    for key, names in registry:
        for name in names:
            chars = [re.escape(ch) for ch in name.lower() if ch not in " -_"]
            patterns.append((key, re.compile(rf"(?<![a-z]){_SEP.join(chars)}(?![a-z])")))
    return patterns


def _mentioned_label(message: Message, labels: Sequence[str]) -> str | None:
    """A label named word for word in the message (longest first), unless its words are all our own keywords."""
    if not labels:
        return None
    names = _label_names(tuple(labels))
    words = [normalize_label(w) for w in message.words]
    for size in range(min(5, len(words)), 0, -1):
        for i in range(len(words) - size + 1):
            phrase = " ".join(words[i : i + size])
            if phrase in names and not all(w in VOCABULARY or w in _DEICTIC for w in phrase.split()):
                return names[phrase]
            singular = phrase[:-1] if phrase.endswith("s") else None
            if singular in names and not all(w in VOCABULARY or w in _DEICTIC for w in singular.split()):
                return names[singular]
    return None


def _image_ref(text: str) -> str | None:
    noun = r"(?:image|picture|photo|pic|one|upload)"
    previous = re.search(rf"\b(?:previous|last|prior|older|earlier|other) {noun}\b|\bone before\b|\bgo back\b", text)
    if re.search(r"\b(?:latest|newest|most recent|new|last uploaded) (?:image|picture|photo|pic|upload)\b", text):
        return "latest"
    if match := re.search(rf"\b(first|second|third|fourth|fifth|sixth|original|initial) {noun}\b", text):
        word = match.group(1)
        return "first" if word in ("first", "original", "initial") else str(_ORDINALS[word])
    if match := re.search(r"\b(?:image|picture|photo|pic)\s*#?\s*(\d{1,3})\b", text):
        return match.group(1)
    return "previous" if previous else None


def _model_name(message: Message, models: Sequence[str]) -> str | None:
    """The model whose name (or a distinctive part of it) appears; the shortest name wins ties."""
    words = set(message.words)
    best, best_score = None, 0.0
    for name in models:
        parts = [p for p in re.split(r"[\s\-_.]+", name.lower()) if p]
        whole = name.lower() in message.text or name.lower().replace("_", " ") in message.text
        hits = sum(p in words for p in parts)
        score = 10.0 if whole else hits - 0.01 * len(parts)
        if (whole or hits) and score > best_score:
            best, best_score = name, score
    return best


def _count(text: str) -> int | None:
    if match := re.search(r"\btop[\s\-]?(\d{1,2}|" + "|".join(_NUMBER_WORDS) + r")\b", text):
        value = match.group(1)
        return int(value) if value.isdigit() else _NUMBER_WORDS[value]
    number = r"(\d{1,2}|" + "|".join(_NUMBER_WORDS) + ")"
    if match := re.search(rf"\b{number} (?:classes|predictions|guesses|labels|candidates|options|maps)\b", text):
        value = match.group(1)
        return int(value) if value.isdigit() else _NUMBER_WORDS[value]
    return None


# ----------------------------------------------------------------------------- rules
# A rule reads a message and returns the intent's fields (a dict, possibly empty) when the message is its kind of
# question, else None. Which intent a rule stands for, and in which order rules are tried, is registered in
# explainer/chat/questions.py.


def _has(text: str, pattern: str) -> bool:
    return re.search(pattern, text) is not None


def greeting(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """Short small talk: "hi", "thanks", "cool"."""
    if len(message.words) <= 4 and _has(message.text, r"^(?:hi|hello|hey|hallo|yo|thanks|thank you|thx|cheers|"
                                                      r"good (?:morning|afternoon|evening)|great|nice|cool|ok|okay)\b"):
        return {}
    return None


def help_request(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """A plain request for help: "help", "what can I ask?"."""
    if _has(message.text, r"^(?:help|menu|commands|options|usage|examples?|\?+)$|\bwhat (?:can|should|could) "
                          r"(?:you|i) (?:do|ask|say)\b|\bhow (?:do|can|should) i (?:use|start|talk)\b"
                          r"|\bwhat do you (?:do|know)\b|\bwhat questions\b|\bhelp me\b$"):
        return {}
    return None


def help_anywhere(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """"help" or "how to" anywhere in a message nothing else understood."""
    return {} if _has(message.text, r"\bhelp\b|\bhow to\b|\bexamples?\b") else None


def setting(message: Message, vocab: Vocab, _details: dict) -> dict | None:
    """A setting and its value: segmentation method, opacity (absolute or "more transparent"), threshold, top-k,
    colormap."""
    text = message.text
    segment = find_segmenter(message.raw)
    if segment is not None:
        return {"setting": "segment", "value": segment}
    if (match := re.search(r"\b(?:opacity|transparency|alpha|overlay strength|blend)\b", text)) and (
            number := _setting_number(message, match.end(), fraction=True)):
        return {"setting": "opacity", **number}
    if _has(text, r"\b(?:more transparent|less opaque|fainter|lighter|weaker|subtler)\b"):
        return {"setting": "opacity", "value": "-0.15"}
    if _has(text, r"\b(?:more opaque|less transparent|stronger|darker|bolder)\b"):
        return {"setting": "opacity", "value": "+0.15"}
    if (match := re.search(r"\bthreshold\b", text)) and (number := _setting_number(message, match.end(),
                                                                                     fraction=True)):
        return {"setting": "threshold", **number}
    if _has(text, rf"\b(?:{_LOWER}) (?:\w+ ){{0,2}}?thresholds?\b|\bthreshold (?:lower|down|smaller)\b"):
        return {"setting": "threshold", "value": f"-{THRESHOLD_STEP}"}
    if _has(text, rf"\b(?:{_RAISE}) (?:\w+ ){{0,2}}?thresholds?\b|\bthreshold (?:higher|up|bigger)\b"):
        return {"setting": "threshold", "value": f"+{THRESHOLD_STEP}"}
    if (match := re.search(r"\btop[\s\-]?k\b", text)) and (number := _setting_number(message, match.end())):
        return {"setting": "top_k", **number}
    maps = [name for name in vocab.colormaps if re.search(rf"\b{re.escape(name.lower())}\b", text)]
    if maps and (_has(text, r"\b(?:colou?r|colormap|cmap|palette|map|use|switch|set|change|try)\b")
                 or len(message.words) <= 2):
        return {"setting": "colormap", "value": maps[0]}
    if _has(text, r"\b(?:colou?r ?map|cmap|palette)\b"):
        return {"setting": "colormap", "value": None}
    if _has(text, r"\bsettings\b"):  # "show the settings", "what are the settings?": the current ones
        return {}
    return None


#: How much "lower the threshold" / "raise the threshold" moves it (a fraction of the map's maximum).
THRESHOLD_STEP = 0.1
_LOWER = r"lower|lowering|reduce|decrease|drop|smaller|loosen|relax|less strict"
_RAISE = r"raise|raising|increase|higher|bigger|larger|tighten|stricter|more strict"


#: A number after a setting's name, read from the original text: its sign, and an exponent (refused), are kept
#: so that "opacity 9e99" is not read as 9 % nor "threshold -5 %" as 5 %. Anything but digits may come before it.
_SETTING_NUMBER = re.compile(r"\D*?(?P<sign>[-+−]?)(?P<digits>\d+(?:\.\d+)?)(?P<exponent>e[-+−]?\d+)?"
                             r"(?![\w.]*\d)\s*(?P<percent>%|percent|per cent)?")


def _setting_number(message: Message, end: int, fraction: bool = False) -> dict | None:
    """``value`` and ``typed`` of the number after the setting name ending at ``end`` of the message's text.

    With ``fraction``, percentages (and plain numbers above 1) become fractions. The value is None for a number
    that is not plain (an exponent), negative numbers stay negative: :func:`explainer.chat.session.setting_number`
    refuses both with the allowed range.
    """
    match = _SETTING_NUMBER.match(message.after(end))
    if match is None:
        return None
    typed = match.string[match.start("sign"):match.end()].strip()
    if match.group("exponent"):
        return {"value": None, "typed": typed}
    value = float(match.group("digits")) * (-1 if match.group("sign") in ("-", "−") else 1)
    if fraction and (match.group("percent") or value > 1):
        value /= 100.0
    return {"value": value if fraction else (int(value) if value.is_integer() else value), "typed": typed}


def model(message: Message, _vocab: Vocab, details: dict) -> dict | None:
    """About the model, or a request to use another one."""
    text = message.text
    named = details["model"]
    if named and _has(text, r"\b(?:model|network|classifier|net|switch|use|load|try|change)\b"):
        return {}
    if _has(text, r"\b(?:which|what) (?:model|network|classifier|net)\b|\babout (?:the|this|your) "
                  r"(?:model|network|classifier)\b|\b(?:who|which model) (?:answered|is answering)\b"
                  r"|\b(?:list|available|other|switch|change) (?:the )?models?\b"
                  r"|\b(?:switch|change|use|load|try) (?:to )?(?:the |a |an |another |other )?(?:\w+ )?"
                  r"(?:model|network|classifier)\b"):
        return {}
    return None


def teach(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """How the method works ("what is Grad-CAM?", "what does the red mean")."""
    text = message.text
    topic = r"(?:grad[\s\-]?cam\S*|\S+[\s\-]?cam\S*|cam|class activation maps?|heat ?maps?|saliency(?: maps?)?|" \
            r"the method|this method|(?:the )?colou?rs?|the overlay|the red|the maps?)"
    if _has(text, rf"\b(?:what(?:'s| is| are| does| do)|tell me about|teach me|describe|define|how does) "
                  rf"(?:a |an |the )?{topic}(?: (?:mean|work|do|show))?\b") or _has(
        text, r"\b(?:explain|describe) (?:the )?(?:grad[\s\-]?cam\S*|\S+[\s\-]?cam\b|the method|this method|"
              r"how (?:it|this|you|the \w+) works?)") or _has(
        text, r"\bhow (?:does|do|did) (?:this|it|that|you|grad[\s\-]?cam|the (?:map|heatmap|method|bot|app)) work"
              r"|\bhow (?:is|was|are|were) (?:this|it|the (?:map|heatmap|overlay)s?) (?:made|computed|calculated|"
              r"built|created|generated)|\bhow do you (?:compute|make|calculate)\b|\b(?:teach|tutorial|"
              r"theory|under the hood|behind the scenes)\b|\bchannel weights?\b"
    ):
        return {}
    return None


def compare_methods(message: Message, _vocab: Vocab, details: dict) -> dict | None:
    """Two or more methods named, or methods in the plural."""
    text = message.text
    if len(details["methods"]) >= 2 or _has(
        text, r"\bmethods\b|\b(?:other|different|all|several|each|every|another) (?:\w+ )?methods?\b"
              r"|\bcompare (?:the )?(?:methods?|techniques|algorithms|cams)\b|\bcams\b"
    ):
        return {}
    return None


def use_method(message: Message, _vocab: Vocab, details: dict) -> dict | None:
    """One method named (use it), or the word "method" (which one is in use)."""
    if details["method"]:
        return {}
    if _has(message.text, r"\b(?:use|switch to|try|change to) (?:the )?default method\b|\bmethod\b"):
        return {"method": None}
    return None


_LAYER_WORDS = r"\blayers?\b|\bdepths?\b|\bfeature maps?\b|\bdeeper\b|\bshallower\b"


def use_layer(message: Message, vocab: Vocab, _details: dict) -> dict | None:
    """A layer by name or number, one step deeper or earlier, or back to the default layer."""
    text = message.text
    named = _layer_name(message.raw, vocab.layers)
    if named:
        return {"layer": named}
    if not _has(text, _LAYER_WORDS):
        return None
    if _has(text, r"\b(?:deeper|later|next|higher)\b"):
        return {"layer_step": 1}
    if _has(text, r"\b(?:earlier|shallower|previous|lower|prior|before)\b"):
        return {"layer_step": -1}
    if _has(text, r"\b(?:default|last|final|automatic|auto|usual|original) layer\b|\breset (?:the )?layer\b"):
        return {"layer": "auto"}
    return None


def layers(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """Layers in general ("which layer?", "show layers")."""
    return {} if _has(message.text, _LAYER_WORDS) else None


def _layer_name(raw: str, layers: Sequence[str]) -> str | None:
    """A layer named after the word "layer" (or alone, if it is one of ``layers``), as the model spells it."""
    by_lower = {name.lower(): name for name in layers}
    leaves = {}
    for name in layers:
        leaves.setdefault(name.rsplit("/", 1)[-1].lower(), []).append(name)
    match = re.search(r"\blayer\b\s*(?:(?:number|no)\b\.?|#)?\s*[\"'`]?([\w./\-]+)", raw, flags=re.IGNORECASE)
    if match:
        token = match.group(1).strip(".'\"`")
        if token.isdigit():
            return token
        if token.lower() in by_lower:
            return by_lower[token.lower()]
        if len(leaves.get(token.lower(), [])) == 1:
            return leaves[token.lower()][0]
        if re.search(r"[_\d/]", token):
            return token  # looks like a layer name: the answer says whether the model has it
    for token in re.findall(r"[\w./\-]+", raw):
        token = token.strip(".'\"`").lower()
        if "_" in token or any(ch.isdigit() for ch in token) or "/" in token:
            if token in by_lower:
                return by_lower[token]
            if len(leaves.get(token, [])) == 1:
                return leaves[token][0]
    return None


def trust(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """Does the map hold up: trust, sanity checks, hiding the highlighted part."""
    if _has(message.text, r"\b(?:trust|trustworthy|trusted|reliable|reliability|robust|faithful|faithfulness|sanity|"
                          r"verify|validate|believable|believe|legit|prove|proof|cheat|cheating|fooled|fool|"
                          r"occlude|occlusion|deletion|insertion)\b|\bhold(?:s)? up\b|\bdouble[\s\-]?check\b"
                          r"|\bcheck (?:it|this|that|the (?:map|heatmap|explanation))\b|\bshortcut\b"
                          r"|\bright for the wrong\b|\b(?:hide|cover|remove|mask out|mask|blur|erase) (?:the |that |"
                          r"this )?(?:highlighted |hot |important )?(?:region|area|part|spot|evidence)\b"
                          r"|\breally (?:looking|look|using|use)\b|\bcan i (?:trust|rely)\b|\bstill say\b"
                          r"|\bwithout (?:the |that |this )?(?:highlighted |hot |important |red )?(?:part|region|area|"
                          r"spot|object|evidence)\b"
                          r"|\b(?:remove|hide|cover|erase) (?:the |that |this )?(?:object|thing)\b"
                          r"|\b(?:is|does) (?:the|this) (?:map|heatmap|explanation) (?:right|correct|accurate)\b"):
        return {}
    return None


_RANK = (r"(?:(?P<rank>second|third|fourth|fifth|2nd|3rd|4th|5th)(?: best| most likely| highest)? "
         r"(?:guess|choice|place|class|prediction|option|candidate|label|one)"
         r"|runner[\s\-]?up|next best(?: guess| class)?)")
_RANKS = {"second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5, "5th": 5}


def class_by_rank(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """A class by its rank, to see on its own: "why not the runner-up?", "explain the third guess"."""
    text = message.text
    rank = re.search(rf"\b{_RANK}\b", text)
    comparing = _has(text, r"\b(?:compare|comparison|versus|vs|side by side|against|both|top)\b")
    if rank and not comparing and _has(text, r"\b(?:why not|what about|how about|explain|show|map|heatmap|where|"
                                             r"evidence|look)\b"):
        return {"target": f"@{_RANKS.get(rank.group('rank') or '', 2)}", "explicit_target": True}
    return None


def compare_classes(message: Message, _vocab: Vocab, details: dict) -> dict | None:
    """Several classes side by side: "compare with the second guess", "top 3 maps", "what else could it be?"."""
    text = message.text
    if rank := re.search(rf"\b{_RANK}\b", text):
        return {"count": details["count"] or _RANKS.get(rank.group("rank") or "", 2)}
    if _has(text, r"\bcompare (?:the )?(?:top|classes|predictions|guesses|candidates)\b|\btop[\s\-]?(?:\d+|"
                  + "|".join(_NUMBER_WORDS) + r") (?:maps|heat ?maps|overlays|explanations|side by side)\b"
                  r"|\bother (?:guesses|classes|candidates|predictions|options)\b|\balternatives?\b|\bside by side\b"
                  r"|\b(?:maps|heatmaps|overlays) (?:for|of) (?:the )?top\b|\bwhat else\b|\bsomething else\b"
                  r"|\bcompare the top\b"):
        return {"count": details["count"] or 3}
    return None


def confidence(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """How sure the model is."""
    if _has(message.text, r"\b(?:confident|confidence|sure|certain|certainty|probability|probabilities|likely|"
                          r"percent|percentage|chance|chances|odds|doubt|calibrated|uncertain|uncertainty|score|"
                          r"scores)\b|\bhow (?:much|strongly)\b|\bout of distribution\b"):
        return {}
    return None


def region(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """The region itself: box, outline, crop, coordinates."""
    if _has(message.text, r"\b(?:segment|segmentation|segmented|box|boxes|bounding|outline|contour|crop|cropped|"
                          r"zoom|region|mask|localize|localise|localization|localisation|coordinates|pixels|"
                          r"draw|area)\b|\bcut (?:it )?out\b|\bwhere exactly\b"):
        return {}
    return None


# --- "is it looking here?": a region the user expects the evidence in, typed as a box or as place words

_BOX_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")  # a number on its own, not the 1 of "x1" (as groundtruth)
_CORNERS = re.compile(r"\bx1\b|\bx2\b|\by2\b|\bcorners?\b|\d\s*\)?\s+to\s+\(?\s*-?\d")
# A place of the 3×3 grid ("lower left", "top-right corner", "center", "the left"), but not "the right place",
# "top 3", "the top class" or "a middle layer".
_PLACE = (r"(?P<place>(?:upper|top|lower|bottom|middle|centre|center|central)(?:[\s\-]+(?:left|right|middle|centre|"
          r"center))?|left|right)(?![\s\-]*(?:\d|place|spot|thing|things|reason|reasons|class|classes|guess|guesses|"
          r"prediction|predictions|k\b|one|ones|finding|findings|label|labels|layer|layers|answer|way|track|now))")
_PLACE_CUES = (
    # "is it looking at the lower left", "it should be in the top right", "the lesion is at the center"
    rf"\b(?:look|looks|looking|looked|focus|focuses|focusing|focused|attend|attends|attending|point|points|pointing|"
    rf"is|are|be|lies|lie|lying|sits|sit|located|appears?|evidence|lesion|object|finding|shape|tumou?r|nodule|"
    rf"it|heat) (?:at|in|on|to|towards|near) (?:the |its |my |your )?(?:very )?{_PLACE}",
    # "does it look where it should: top right", "expected region: lower left"
    rf"\bwhere (?:it|the model|the map|the heatmap|the evidence|you) (?:should|ought|must)\b.*?\b{_PLACE}",
    rf"\bexpected (?:region|place|area|location|box)\b.*?\b{_PLACE}",
)
# "does it look where it should?" without a place: the region said before, or a request to say one.
_EXPECT_WORDS = (r"\bwhere (?:it|the model|the map|the heatmap|the evidence) (?:should|ought to|must)\b"
                 r"|\bwhere (?:i|we) (?:expect|expected|think|want)\b|\b(?:my|the) expected (?:region|place|area)\b"
                 r"|\blooking here\b")
# Words that say a number sequence is a region: "is it looking at 40, 60, 80", "the box 1 2 3".
_BOX_CUES = r"\b(?:at|look|looking|box|region|lesion|evidence|should|expect|expected|x1|corners?|pixels?|px)\b"


def expected(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """Where the user expects the evidence: "is it looking at 40, 60, 80, 80?", "it should be in the lower left"."""
    phrase = region_phrase(message.raw)
    if phrase is not None:
        return {"region": phrase}
    numbers = _BOX_NUMBER.findall(message.raw)
    if 2 <= len(numbers) <= 8 and _has(message.text, _BOX_CUES):  # a box with a number too many or too few
        return {"region": message.raw}  # the answer says what a box is
    if _has(message.text, _EXPECT_WORDS):
        return {"region": None}
    return None


def region_phrase(text: str) -> str | None:
    """The region a message states, tidied for :func:`explainer.evaluation.groundtruth.region_from_text`, or None.

    Exactly four numbers are a box: ``"40, 60, 80, 80"`` (x, y, width, height), or ``"corners 10, 10, 50, 50"``
    when the message says so ("x1,y1,x2,y2", "corners", "from 10,10 to 50,50"). Otherwise place words of the 3×3
    grid after a cue ("looking at the lower left", "should be in the top right", "where it should: center").

    Parameters
    ----------
    text : str
        A message as typed (or the app's region field).

    Returns
    -------
    str or None
        None when the message states no region.
    """
    raw = one_line(str(text or ""), MAX_QUESTION_CHARS)
    numbers = _BOX_NUMBER.findall(raw)
    if len(numbers) == 4:
        corners = _CORNERS.search(raw.lower()) is not None
        return ("corners " if corners else "") + ", ".join(numbers)
    lowered = " ".join(re.findall(r"[\w'\-]+|:", raw.lower()))
    for cue in _PLACE_CUES:
        if match := re.search(cue, lowered):
            return " ".join(re.findall(r"[a-z]+", match.group("place")))
    return None


_MASK_WORDS = (r"\bmasks?\b|\bexpected (?:region|area|place|location|box)\b|\bground[\s\-]?truth\b|\bannotations?\b"
               r"|\bsegmentation\b|\b(?:my|our) (?:region|area|drawing)\b|\bwhere (?:it|the model|the evidence) "
               r"(?:should|ought to|must)\b")
_MASK_AS_CLASS = (r"\b(?:is (?:it|this|that)|why not|what about|how about|could it be|might it be|not) "
                  r"(?:an? |the )?masks?\b")


def names_mask(text: str) -> bool:
    """True when a message that comes with a file calls that file a mask of the expected region.

    "here is the mask", "mask of the lesion", "the expected region", "ground truth"; but "is it a mask?" asks about a
    class (ImageNet has one).
    """
    lowered = one_line(str(text or ""), MAX_QUESTION_CHARS).lower()
    return _has(lowered, _MASK_WORDS) and not _has(lowered, _MASK_AS_CLASS)


_CLASS_PATTERNS_STRONG = (
    r"\bwhy not (?P<c>.+)",
    r"\bwhy (?:is ?n'?t|is it not|isnt|not|wasn'?t|didn'?t it say|did it not say|not call it) (?:it |this )?"
    r"(?P<c>.+)",
    r"\b(?:what|how) about (?P<c>.+)",
    r"\b(?:explain|show(?: me)?|highlight|visuali[sz]e|map|heatmap for) (?:the )?(?:class|label) (?P<c>.+)",
    r"\bevidence (?:for|of) (?P<c>.+)",
    r"\b(?:compared? (?:it )?(?:with|to)|versus|vs) (?P<c>.+)",
    r"^(?P<c>.+?) instead\b",
)
_CLASS_PATTERNS_WEAK = (
    r"\b(?:explain|show(?: me)?|highlight|find|locate|visuali[sz]e) (?P<c>.+)",
    r"\bwhere(?: is|'s| are) (?P<c>.+)",
    r"\b(?:is it|is this|is that|could it be|could this be|might it be|maybe|it's|it is|isn'?t it) (?P<c>.+)",
    r"\b(?:why|how come) (?:is it|is this|it's|it is|did it say|does it say|call it) (?P<c>.+)",
)


def class_strong(message: Message, vocab: Vocab, details: dict) -> dict | None:
    """A class question in a form that names a class whatever follows: "why not X", "what about X"."""
    return _class(message, vocab, details, _CLASS_PATTERNS_STRONG, strong=True)


def class_weak(message: Message, vocab: Vocab, details: dict) -> dict | None:
    """"explain X", "is it X", "where is X": a class question only when X looks like one of the labels."""
    return _class(message, vocab, details, _CLASS_PATTERNS_WEAK, strong=False)


#: "is this a dog?": one word after "is it", not a label. Words that judge the answer ("is it sure?") are not classes.
_IS_IT_A = re.compile(r"^(?:so )?(?:is|was|isn'?t) (?:it|this|that) (?:a |an )?(?P<c>[a-z][a-z\-]{1,30})\W*$")
_JUDGING = _wordset("""
right wrong correct sure certain confident reliable trustworthy true false good bad ok okay fine real fake working
broken biased fair accurate calibrated looking done finished ready possible likely random blank empty new same
""")


def class_unknown(message: Message, vocab: Vocab, _details: dict) -> dict | None:
    """"is this a dog?" on a model without dogs: a class question, so the answer names the classes it knows."""
    match = _IS_IT_A.match(message.text)
    if not match or match["c"] in VOCABULARY or match["c"] in _JUDGING or match["c"] in _KEEP:
        return None
    return {"target": match["c"], "explicit_target": True}


def _class(message: Message, vocab: Vocab, details: dict, patterns: tuple[str, ...], strong: bool):
    """A class question; weak patterns ("explain X", "is it X") only count when X looks like one of the labels."""
    for pattern in patterns:
        match = re.search(pattern, message.text)
        if not match:
            continue
        phrase = _class_phrase(message.original_span(*match.span("c")))
        if not phrase or _is_deictic(phrase):
            continue
        if strong or _looks_like_label(phrase, vocab.labels) or phrase == details["target"]:
            return {"target": phrase, "explicit_target": True}
    return None


def _class_phrase(phrase: str) -> str:
    phrase = phrase.strip(" ?!.,;:'\"")
    for _ in range(3):
        phrase = _FILLER_TAIL.sub("", phrase).strip(" ?!.,;:'\"")
        phrase = _ARTICLE.sub("", phrase).strip()
    return phrase


def _is_deictic(phrase: str) -> bool:
    words = normalize_label(phrase).split()
    return not words or words[0] in _DEICTIC - {"a", "an", "the", "top"} or all(w in _DEICTIC for w in words)


def _looks_like_label(phrase: str, labels: Sequence[str]) -> bool:
    """True when ``phrase`` names a label exactly, by its words, or by a close misspelling of a label or a word.

    A cheap stand-in for :func:`explainer.labels.match_label` (which the answer runs later to resolve the class):
    it must stay fast for 1,000 ImageNet labels, because every "show me X" or "is it X" passes through here.
    """
    words = normalize_label(phrase).split()
    if not labels or not words or all(w in VOCABULARY or w in _DEICTIC for w in words):
        return False
    names, vocabulary, spans = _label_index(tuple(labels))
    wanted = " ".join(words)
    if wanted in names or all(w in vocabulary for w in words):
        return True
    return len(words) <= 3 and bool(difflib.get_close_matches(wanted, spans, n=1, cutoff=0.8))


@functools.lru_cache(maxsize=8)
def _label_index(labels: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    """Normalised labels, their words, and every label and run of up to three words (for fuzzy matching)."""
    names = [normalize_label(label) for label in labels]
    spans = set(names)
    for name in names:
        parts = name.split()
        for size in (1, 2, 3):
            spans.update(" ".join(parts[i : i + size]) for i in range(len(parts) - size + 1))
    return frozenset(names), frozenset(w for name in names for w in name.split()), tuple(sorted(spans))


def why(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """Why, where is it looking, the heatmap."""
    if _has(message.text, r"\b(?:why|explain|explanation|reason|reasons|reasoning|justify|because|evidence|"
                          r"attention|saliency|heatmap|heat map|overlay|focus|focusing|focused)\b"
                          r"|\blook(?:s|ing|ed)? at\b|\bwhere (?:is|does|did|was) (?:it|the model|the network|"
                          r"you) (?:look|focus|attend|see)|\bwhat (?:made|makes|led|did) (?:it|you|the model)\b"
                          r"|\bhow did (?:it|you|the model) (?:decide|know|tell|choose|conclude)\b|\bbased on\b"
                          r"|\bwhich (?:part|parts|pixels|area)\b|\bwhat (?:part|parts)\b|\bshow (?:me )?(?:the )?map\b"
                          r"|\bgrad[\s\-]?cam\b|\bwhere\b"):
        return {}
    return None


def what(message: Message, _vocab: Vocab, details: dict) -> dict | None:
    """What is it, the top classes."""
    text = message.text
    if details["count"] or _has(
        text, r"\bwhat(?:'s| is| are)? (?:it|this|that|these|in (?:the|this|it)|the (?:object|thing|image|picture))\b"
              r"|\bwhat do you see\b|\bclassify\b|\bpredict(?:ion|ions|ed|s)?\b|\bidentify\b|\brecogni[sz]e\b"
              r"|\b(?:which|what) (?:class|label|kind|sort|type|category|object|shape|animal|thing)\b|\bguess\b"
              r"|\blabels?\b|\bclasses\b|\bwhat is$|\bwhat'?s that\b|^what\W*$|^what (?:now|then|else|about it)\b"
    ):
        return {}
    return None


def image(_message: Message, _vocab: Vocab, details: dict) -> dict | None:
    """Only a reference to another image ("previous image", "image 2")."""
    return {} if details["image_ref"] else None


def bare_label(message: Message, vocab: Vocab, details: dict) -> dict | None:
    """A label alone ("tabby cat", "circle?"), or a label somewhere in a message nothing else understood."""
    if details["target"] or (len(message.words) <= 4 and _looks_like_label(_class_phrase(message.raw), vocab.labels)):
        return {"target": details["target"] or _class_phrase(message.raw), "explicit_target": True}
    return None



# --- the questions people ask next: a contrast, the evidence against, covering a part, the colour scale

#: "A rather than B", "A and not B", "A vs B", "A instead of B": the words between two classes of a contrast.
_RATHER = r"(?:rather th[ae]n|and not|but not|instead of|as opposed to|not|versus|vs)"
#: Words before the first class that only ask ("why is it", "what makes it", "compare").
_CONTRAST_LEAD = (r"^(?:so |and |but |ok |okay |please |hey )*(?:(?:but )?why(?: is| was| did| does| do)?"
                  r"(?: it| this| that| you| the model)?(?: say| call it| think)?(?: it'?s)?"
                  r"|what makes (?:it|this|that|you|the model)(?: say| think| call it)?(?: it'?s)?"
                  r"|how (?:does|did|do) (?:it|you|the model) (?:tell|know)(?: it'?s)?"
                  r"|compare|contrast|explain|show(?: me)?|)\s*")
#: A contrast with only the second class named ("why rather than a square?"): the first is the top class.
_ONE_SIDED = ("rather than", "rather then", "instead of", "as opposed to")


def contrast(message: Message, vocab: Vocab, _details: dict) -> dict | None:
    """Two classes set against each other: "why a circle rather than a square?", "circle vs square"."""
    text = message.text
    match = re.search(rf"^(?P<lead>.*?)\b(?P<rather>{_RATHER})\b(?P<rest>.+)$", text)
    if match is None:
        return None
    rest = match["rest"]
    other = _contrast_class(message, vocab, match.end("rest") - len(rest.lstrip()), match.end("rest"))
    lead = re.match(_CONTRAST_LEAD, match["lead"])
    end = len(match["lead"].rstrip())  # the lead's own words, not the connector's
    first = _class_phrase(message.original_span(lead.end(), end)) if lead.end() < end else ""
    if other is None:
        return None
    if first and not _is_deictic(first):
        return {"target": first, "versus": other, "explicit_target": True} if _looks_like_label(
            first, vocab.labels) else None
    return {"target": None, "versus": other} if match["rather"] in _ONE_SIDED else None


def _contrast_class(message: Message, vocab: Vocab, start: int, end: int) -> str | None:
    """The class after "rather than": a label (as typed) or a rank ("@2" for the runner-up), else None."""
    if rank := re.search(rf"\b{_RANK}\b", message.text[start:end]):
        return f"@{_RANKS.get(rank.group('rank') or '', 2)}"
    phrase = _class_phrase(message.original_span(start, end))
    return phrase if phrase and not _is_deictic(phrase) and _looks_like_label(phrase, vocab.labels) else None


_AGAINST = (r"\b(?:speaks?|speaking|argues?|arguing|counts?|points?|works?|evidence|says?|votes?) against\b"
            r"|\bnegative (?:evidence|map|regions?|parts?|influence|contributions?|side)\b|\bcounter[\s\-]?evidence\b"
            r"|\bcounter[\s\-]?factual\b|\bwhat (?:lowers|reduces|decreases|hurts|weakens|lessens)\b"
            r"|\b(?:lowers?|reduces?|decreases?|hurts?|weakens?) (?:the |its |their )?(?:score|probability|"
            r"confidence|evidence|chance)\b|\b(?:makes?|made) it less (?:likely|sure|confident)\b")


def against(message: Message, vocab: Vocab, details: dict) -> dict | None:
    """What speaks against a class: "what speaks against circle?", "show the negative evidence"."""
    if not _has(message.text, _AGAINST):
        return None
    if details["target"]:
        return {"explicit_target": True}
    if match := re.search(r"\b(?:against|of|for) (?P<c>.+)", message.text):
        phrase = _class_phrase(message.original_span(*match.span("c")))
        if phrase and not _is_deictic(phrase) and _looks_like_label(phrase, vocab.labels):
            return {"target": phrase, "explicit_target": True}
    return {}


_COVER = (r"(?:cover|covered|covering|hide|hid|hiding|remove|removed|removing|mask out|masked|block|blocked|blank|"
          r"black out|grey out|gray out|erase|erased|occlude|occluded|blur|blurred|delete|paint over|cut away|"
          r"take away|took away)")
_WHAT_IF_ASKED = (r"\bwhat (?:if|happens (?:if|when)|would happen if|about if)\b|\bsuppose\b|\bimagine\b"
                  r"|\bwhat would (?:it|the model|you) (?:say|predict|think)\b|\bif (?:i|we|you) (?:cover|hide|"
                  r"remove|blur|erase|keep|occlude|mask|block)\b")
_KEEP_ONLY = (r"\b(?:keep|leave|show|see) (?:just |only )(?:the )?|\bonly keep\b|\beverything (?:but|except)\b"
              r"|\ball but\b")
_HIGHLIGHTED = (r"\b(?:highlighted|hot|important|red|marked|hottest|brightest) (?:region|area|part|spot|box|bit|"
                r"stuff)\b|\bthe (?:region|box|evidence|highlight|object|shape|thing)\b|\b(?:it|that|this)\b")
_FILLS = (("blur", r"\bblur\w*\b"), ("mean", r"\b(?:mean|average) colou?r\b|\bmean\b|\baverage\b"),
          ("black", r"\bblack\b"))


def what_if(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """Cover a part of the image and ask again: "what if I cover the top left?", "cover 10, 10, 60, 60",
    "keep only the centre". The imperative "hide the highlighted region" stays the trust check."""
    text = message.text
    keep = _has(text, _KEEP_ONLY)
    verb = re.search(rf"\b{_COVER}\b", text) or re.search(_KEEP_ONLY, text)
    if verb is None:
        return None
    asked = _has(text, _WHAT_IF_ASKED)
    region = _covered_region(message, verb.end())
    if region is None and not asked:
        return None
    if region is None:
        if not _has(text[verb.end():], _HIGHLIGHTED) and len(text) > verb.end() + 1:
            return None
        region = "highlighted"
    return {"region": region, "keep": keep, "fill": fill_named(text)}


def fill_named(text: str) -> str | None:
    """The fill a what-if message asks for (``blur``, ``mean``, ``black``), or None."""
    return next((name for name, pattern in _FILLS if _has(text.lower(), pattern)), None)


def _covered_region(message: Message, after: int) -> str | None:
    """A box (four numbers) or place words of the 3×3 grid after the covering verb, tidied as the region text."""
    numbers = _BOX_NUMBER.findall(message.raw)
    if len(numbers) == 4:
        return region_phrase(message.raw)
    if match := re.search(rf"\b{_PLACE}(?:[\s\-]+(?:corner|half|third|side|edge|part|bit))?\b", message.text[after:]):
        return " ".join(re.findall(r"[a-z]+", match.group("place")))
    return None


def what_if_follow_up(intent: Intent) -> dict | None:
    """After a what-if answer, a message naming only another part ("and with the box at 30, 30, 40, 40?", "and the
    lower right?") is the same question about that part: its region fields, else None."""
    lowered = intent.text.lower()
    if _has(lowered, r"\b(?:look\w*|should|expect\w*|evidence|focus\w*|point\w*)\b"):
        return None
    if len(_BOX_NUMBER.findall(intent.text)) == 4:
        return {"region": region_phrase(intent.text)}
    if match := re.search(rf"^(?:and |now |then |ok |okay )?(?:(?:with|for|try|what about|how about) )?(?:the )?"
                          rf"{_PLACE}\b", " ".join(re.findall(r"[a-z\-]+", lowered))):
        return {"region": " ".join(re.findall(r"[a-z]+", match.group("place")))}
    return None


_COLOUR = (r"(?:colou?rs?|colou?r ?(?:map|scale|bar|code|coding|key)s?|cmap|palette|reds?|blues?|yellows?|greens?|"
           r"purples?|oranges?|dark red|dark blue|warm colou?rs|cold colou?rs)")


def legend(message: Message, _vocab: Vocab, _details: dict) -> dict | None:
    """What the colours of the overlay mean: "what do the colours mean?", "what does red mean", "colour scale"."""
    if _has(message.text, rf"\blegend\b|\bcolou?r ?(?:scale|bar|key|code|coding)\b|\bcolorbar\b"
                          rf"|\bwhat (?:do|does|did|is|are) (?:the |this |that |these |all )?(?:\w+ )?{_COLOUR} "
                          rf"(?:\w+ ){{0,4}}?(?:mean|means|stand for|show|indicate|represent|signify)\b"
                          rf"|\b(?:explain|read|meaning of|interpret) (?:the |this |these )?(?:\w+ )?{_COLOUR}\b"
                          rf"|\bwhy is (?:it|this|that|the \w+) (?:red|blue|yellow)\b"):
        return {}
    return None
