"""VQAv2 accuracy on answer strings and the soft-score shortcut (fact sheet §3.5, §4 "Soft scores").

* :func:`normalize_answer` applies the official VQA evaluation's rules (``vqaEval.py`` of the VQA
  challenge): punctuation, periods, number words, articles and its contraction map, as that script
  has them, quirks included (see below).
* :func:`vqa_accuracy` is the official per-question accuracy: the mean, over the leave-one-out
  subsets of the human answers, of ``min(#matches in the subset / 3, 1)``.
* :func:`soft_score_accuracy` is the training-time shortcut (``VQAScore``): the soft target
  score of the argmax label.

The official script's behaviour, reproduced on purpose because leaderboards score with it:

* When all human answers are the same string (after replacing newlines and tabs and stripping),
  nothing is normalised: ``"Yes"`` scores 0 against ten ``"yes"``. ``VQA_NORMALIZE`` modes:
  ``official`` (that rule, the default), ``always`` (normalise every time, vlkit's earlier
  behaviour) and ``none`` (plain string equality).
* Whether a punctuation mark is deleted or becomes a space is decided on the original text
  (``"black-and/-white"`` -> ``"black and white"``).
* At most 32 periods are removed from one answer (the script passes ``re.UNICODE``, 32, where
  ``re.sub`` takes its count).
* The contraction map is the script's, including keys that can never match (``"Im"``; words are
  lower-cased first) and its one odd entry (``"somebody'd"`` -> ``"somebodyd"``).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "PUNCTUATION",
    "VQA_NORMALIZE",
    "normalize_answer",
    "soft_score_accuracy",
    "vqa_accuracy",
]

VQA_NORMALIZE = ("official", "always", "none")
"""When :func:`vqa_accuracy` normalises answers (the ``vqa_normalize`` config key)."""

# Characters handled as punctuation, in the official order. The period is handled separately
# (it can be a decimal point) and the apostrophe is kept (it belongs to contractions).
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
    ",", "?", "!",
)

NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The official evaluation's contraction map (a word equal to a key becomes the value).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# A period is dropped unless a digit follows it ("3.5" and ".5" keep theirs; "yes." does not).
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_MAX_PERIODS_REMOVED = 32
"""The official script's period substitution count (``re.UNICODE`` passed positionally)."""


def _process_punctuation(text: str) -> str:
    """Remove or space out punctuation, as the official evaluation does.

    A punctuation mark is deleted outright when, in the text as given, it touches a space
    (``"a, b"``) or the text has a comma between digits (``"1,000"`` -> ``"1000"``); otherwise it
    becomes a space (``"red/white"`` -> ``"red white"``). Then the first 32 periods not followed
    by a digit are deleted.
    """
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if digit_comma or (mark + " ") in text or (" " + mark) in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def _process_words(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, fix contractions; single spaces."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word in ARTICLES:
            continue
        words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def _clean(text: str) -> str:
    """Newlines and tabs to spaces, then strip (the official script does this to every answer)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """Normalise an answer string the way the official VQA evaluation does.

    Steps: newlines/tabs to spaces and strip; punctuation (see :func:`_process_punctuation`);
    lower-case; number words ``none``/``zero`` .. ``ten`` to digits; drop the articles
    ``a``/``an``/``the``; the official contraction map (``dont`` -> ``don't``); single spaces.
    """
    return _process_words(_process_punctuation(_clean(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str], normalize: str = "official") -> float:
    """Official VQA accuracy of one prediction against the human answers (normally 10).

    For each answer ``i``, count the *other* answers equal to the prediction and score
    ``min(count / 3, 1)``; return the mean over all ``i``. With 10 answers this gives
    0, 0.3, 0.6, 0.9 and 1.0 for 0, 1, 2, 3 and >= 4 matching answers. With a single answer
    there is no leave-one-out subset and the score is ``min(matches / 3, 1)``.

    ``normalize``: ``official`` normalises the prediction and the answers only when the answers
    (newlines/tabs replaced, stripped) are not all the same string, as the official script;
    ``always`` normalises every time; ``none`` compares the strings as given.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not a single string")
    if len(answers) == 0:
        raise ValueError("answers must not be empty")
    if normalize not in VQA_NORMALIZE:
        raise ValueError(f"vqa_normalize={normalize!r}: use one of {list(VQA_NORMALIZE)}")
    if normalize != "none":
        prediction = _clean(prediction)
        answers = [_clean(a) for a in answers]
        if normalize == "always" or len(set(answers)) > 1:
            prediction = normalize_answer(prediction)
            answers = [normalize_answer(a) for a in answers]
    matches = [a == prediction for a in answers]
    total = sum(matches)
    if len(answers) == 1:
        return min(total / 3.0, 1.0)
    # Leaving out answer i removes one match when answer i itself matched.
    scores = [min((total - int(m)) / 3.0, 1.0) for m in matches]
    return sum(scores) / len(scores)


def soft_score_accuracy(
    logits: torch.Tensor, target_scores: torch.Tensor, reduction: str = "mean"
) -> float:
    """Soft-score shortcut of the VQA metric: the target score at the argmax of the logits.

    ``logits`` and ``target_scores`` are (B, num_answers); ``target_scores`` holds the soft
    scores (0.3/0.6/0.9/1.0 by answer count) at the labels of each question and 0 elsewhere.
    The per-question scores are summed; ``reduction="mean"`` (default, what ``VQAScore``
    reports) divides by B, ``"sum"`` returns the plain sum (to accumulate over batches).
    Ties in the logits go to the lowest index (``torch.argmax``).
    """
    if logits.ndim != 2 or logits.shape != target_scores.shape:
        raise ValueError(
            "logits and target_scores must both be (B, num_answers); got "
            f"{tuple(logits.shape)} and {tuple(target_scores.shape)}"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    batch = logits.shape[0]
    if batch == 0:
        return 0.0
    pred = logits.detach().argmax(dim=1)
    picked = target_scores.detach().gather(1, pred.unsqueeze(1).to(target_scores.device))
    total = float(picked.double().sum())
    return total / batch if reduction == "mean" else total
