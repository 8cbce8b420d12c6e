"""VQAv2 accuracy: normalisation rules, leave-one-out averaging, soft-score shortcut (hand-computed)."""
import pytest
import torch

from vlkit.eval.vqa_score import normalize_answer, soft_score_accuracy, vqa_accuracy


# ---------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  Yes  ", "yes"),  # strip + lowercase
        ("YES\n", "yes"),
        ("red\tcar", "red car"),  # tab -> space
        ("two", "2"),  # number words
        ("Zero", "0"),
        ("ten", "10"),
        ("none", "0"),
        ("eleven", "eleven"),  # only none/zero..ten
        ("a dog", "dog"),  # articles
        ("The Cat", "cat"),
        ("an apple", "apple"),
        ("the two dogs", "2 dogs"),
        ("dont", "don't"),  # contractions
        ("isnt", "isn't"),
        ("whats", "what's"),
        ("cant", "can't"),
        ("wont", "won't"),
        ("don't", "don't"),  # already contracted: apostrophe is kept
        ("yes!", "yes"),  # mark without a neighbouring space -> space, then collapsed
        ("red/white", "red white"),  # punctuation inside a word -> space
        ("black-and-white", "black and white"),
        ("red, white", "red white"),  # mark touches a space -> deleted
        ("1,000", "1000"),  # comma between digits -> deleted
        ("3.5", "3.5"),  # decimal point kept
        (".5", ".5"),
        ("yes.", "yes"),  # period not before a digit -> deleted
        ("mr. smith", "mr smith"),
        ("u.s.a", "usa"),
        ("(left)", "left"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalize_comma_between_digits_deletes_all_marks():
    # With a digit comma anywhere in the text, every punctuation mark is deleted (not spaced).
    assert normalize_answer("1,000-2,000") == "10002000"


def test_equivalent_spellings_match():
    assert normalize_answer("Two.") == normalize_answer("2")
    assert normalize_answer("The dont") == normalize_answer("don't")


# ---------------------------------------------------------------- leave-one-out accuracy
def _answers(pred, matches, n=10):
    return [pred] * matches + [f"other{i}" for i in range(n - matches)]


@pytest.mark.parametrize(
    "matches, expected",
    [
        (0, 0.0),
        # 1 match: 9 subsets hold it (1/3), 1 does not (0): 9 * 1/3 / 10 = 0.3
        (1, 0.3),
        # 2 matches: 8 subsets hold both (2/3), 2 hold one (1/3): (8*2/3 + 2*1/3) / 10 = 0.6
        (2, 0.6),
        # 3 matches: 7 subsets hold 3 (1), 3 hold 2 (2/3): (7 + 3*2/3) / 10 = 0.9
        (3, 0.9),
        (4, 1.0),  # every subset keeps >= 3
        (7, 1.0),
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matches, expected):
    assert vqa_accuracy("cat", _answers("cat", matches)) == pytest.approx(expected)


def test_vqa_accuracy_uses_normalisation():
    answers = ["2", "Two", "two.", "TWO", "three", "3", "3", "3", "3", "3"]
    assert vqa_accuracy("2", answers) == pytest.approx(1.0)  # 4 matches
    assert vqa_accuracy("a Two", answers[:2] + ["x"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("Two", ["2"] + ["x"] * 9, normalize="none") == 0.0


def test_vqa_accuracy_other_lengths_and_errors():
    # 4 answers, 1 match: 3 subsets hold it (1/3), 1 does not: (3 * 1/3) / 4 = 0.25
    assert vqa_accuracy("a", ["a", "b", "c", "d"]) == pytest.approx(0.25)
    assert vqa_accuracy("a", ["a"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        vqa_accuracy("a", [])
    with pytest.raises(TypeError):
        vqa_accuracy("a", "a")


# ---------------------------------------------------------------- soft-score shortcut
def test_soft_score_accuracy():
    logits = torch.tensor(
        [
            [0.1, 2.0, 0.3, 0.0],  # argmax 1 -> 1.0
            [5.0, 0.0, 0.0, 0.0],  # argmax 0 -> 0.0
            [0.0, 0.0, 0.0, 9.0],  # argmax 3 -> 0.3
            [0.0, 1.0, 1.0, 0.0],  # tie: argmax 1 (lowest index) -> 0.6
        ]
    )
    targets = torch.tensor(
        [
            [0.0, 1.0, 0.3, 0.0],
            [0.0, 0.9, 0.0, 0.0],
            [0.0, 0.0, 0.6, 0.3],
            [0.0, 0.6, 0.9, 0.0],
        ]
    )
    assert soft_score_accuracy(logits, targets, reduction="sum") == pytest.approx(1.9)
    assert soft_score_accuracy(logits, targets) == pytest.approx(1.9 / 4)
    assert soft_score_accuracy(logits[:0], targets[:0]) == 0.0


def test_soft_score_matches_string_accuracy():
    # Soft targets are exactly the leave-one-out accuracies of 0..4 matches.
    targets = torch.tensor([[vqa_accuracy("x", _answers("x", m)) for m in range(5)]])
    for m in range(5):
        logits = torch.zeros(1, 5)
        logits[0, m] = 1.0
        assert soft_score_accuracy(logits, targets) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0][m])


def test_soft_score_errors():
    with pytest.raises(ValueError):
        soft_score_accuracy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        soft_score_accuracy(torch.zeros(2, 3), torch.zeros(2, 3), reduction="max")
