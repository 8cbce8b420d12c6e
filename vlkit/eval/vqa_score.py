"""VQAv2 accuracy on answer strings and the soft-score shortcut (fact sheet §3.5, §4 "Soft scores").

* :func:`normalize_answer` follows the rules of the official VQA evaluation: punctuation,
  periods, number words, articles and contractions.
* :func:`vqa_accuracy` is the official per-question accuracy: the mean, over the leave-one-out
  subsets of the human answers, of ``min(#matches in the subset / 3, 1)``.
* :func:`soft_score_accuracy` is the training-time shortcut (``VQAScore``): the soft target
  score of the argmax label.

Differences from the official script, on purpose:

* Normalisation is always applied to the prediction and to every answer. The official script
  skips it when the 10 human answers are all the same string; on clean data this changes nothing.
* Contraction keys are lower-case. The official map has keys such as ``"Im"`` and ``"Ill"`` that
  can never match a lower-cased word, so they are left out, and ``"ill"``/``"id"`` are not
  expanded.
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
    "normalize_answer",
    "soft_score_accuracy",
    "vqa_accuracy",
]

# Characters handled as punctuation. The period is handled separately (it can be a decimal
# point) and the apostrophe is kept (it belongs to contractions).
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

# Apostrophe-less spelling -> standard spelling. Both spellings normalise to the value.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldntve": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "isnt": "isn't",
    "itd": "it'd",
    "itll": "it'll",
    "lets": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "shant": "shan't",
    "shed": "she'd",
    "shes": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "somebodys": "somebody's",
    "someones": "someone's",
    "somethings": "something's",
    "thats": "that's",
    "thered": "there'd",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed": "we'd",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "yall": "y'all",
    "youd": "you'd",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# A period is dropped unless a digit follows it ("3.5" and ".5" keep theirs; "yes." does not).
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def _process_punctuation(text: str) -> str:
    """Remove or space out punctuation, as the official evaluation does.

    A punctuation mark is deleted outright when it touches a space anywhere in the text
    (``"a, b"``) or when the text has a comma between digits (``"1,000"`` -> ``"1000"``);
    otherwise it becomes a space (``"red/white"`` -> ``"red white"``). Periods not followed
    by a digit are then deleted.
    """
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        if mark not in text:
            continue
        if digit_comma or (mark + " ") in text or (" " + mark) in text:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", text)


def _process_words(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, fix contractions; single spaces."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word in ARTICLES:
            continue
        words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """Normalise an answer string the way the official VQA evaluation does.

    Steps: newlines/tabs to spaces and strip; lower-case; punctuation (see
    :func:`_process_punctuation`); number words ``none``/``zero`` .. ``ten`` to digits; drop
    the articles ``a``/``an``/``the``; expand apostrophe-less contractions (``dont`` ->
    ``don't``); collapse whitespace.
    """
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    return _process_words(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str], normalize: bool = True) -> float:
    """Official VQA accuracy of one prediction against the human answers (normally 10).

    For each answer ``i``, count the *other* answers equal to the prediction and score
    ``min(count / 3, 1)``; return the mean over all ``i``. With 10 answers this gives
    0, 0.3, 0.6, 0.9 and 1.0 for 0, 1, 2, 3 and >= 4 matching answers. With a single answer
    there is no leave-one-out subset and the score is ``min(matches / 3, 1)``.
    """
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not a single string")
    if len(answers) == 0:
        raise ValueError("answers must not be empty")
    if normalize:
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
