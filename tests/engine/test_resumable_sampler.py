"""ResumableDistributedSampler: rank splits, evaluation coverage, sample seeds, mid-epoch resume."""
import pytest

from vlkit.data.samplers import ResumableDistributedSampler
from vlkit.utils.seeding import sample_seed


def samplers(size, world, **kwargs):
    return [ResumableDistributedSampler(range(size), num_replicas=world, rank=rank, **kwargs)
            for rank in range(world)]


def indices(sampler):
    return [index for index, _ in sampler]


def test_evaluation_mode_covers_each_index_exactly_once_over_two_ranks():
    ranks = samplers(7, 2, training=False)
    yielded = indices(ranks[0]) + indices(ranks[1])
    assert sorted(yielded) == list(range(7))
    assert [len(s) for s in ranks] == [len(indices(s)) for s in ranks] == [4, 3]


def test_training_mode_pads_to_equal_rank_lengths_and_covers_everything():
    ranks = samplers(7, 2, seed=5)
    assert [len(indices(s)) for s in ranks] == [len(s) for s in ranks] == [4, 4]
    assert set(indices(ranks[0]) + indices(ranks[1])) == set(range(7))


def test_keys_carry_the_per_sample_seed_and_epochs_reshuffle():
    sampler = ResumableDistributedSampler(range(20), num_replicas=1, rank=0, seed=3)
    first = list(sampler)
    assert all(seed == sample_seed(3, 0, index) for index, seed in first)
    sampler.set_epoch(1)
    second = list(sampler)
    assert all(seed == sample_seed(3, 1, index) for index, seed in second)
    assert [i for i, _ in first] != [i for i, _ in second]
    assert sorted(i for i, _ in second) == list(range(20))


def test_state_dict_resumes_at_the_next_unconsumed_sample():
    straight = samplers(11, 2, seed=1)
    for sampler in straight:
        sampler.set_epoch(2)
    full = [list(s) for s in straight]
    for sampler in straight:
        sampler.mark_consumed(2)
    state = straight[0].state_dict()
    assert state == {"epoch": 2, "position": 4, "dataset_size": 11}

    resumed = samplers(11, 2, seed=1)
    for sampler in resumed:
        sampler.load_state_dict(state)
        sampler.set_epoch(2)
    assert [list(s) for s in resumed] == [keys[2:] for keys in full]
    assert [len(s) for s in resumed] == [4, 4]
    resumed[0].set_epoch(3)
    assert len(resumed[0]) == 6


def test_resume_under_another_world_size_yields_exactly_the_unconsumed_samples():
    two = samplers(9, 2, seed=4)
    consumed = [index for s in two for index in indices(s)[:2]]
    for sampler in two:
        sampler.mark_consumed(2)
    one = ResumableDistributedSampler(range(9), num_replicas=1, rank=0, seed=4)
    one.load_state_dict(two[0].state_dict())
    assert sorted(consumed + indices(one)) == list(range(9))


def test_state_from_another_dataset_is_refused():
    sampler = ResumableDistributedSampler(range(5), num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="dataset of 6 samples but this one has 5"):
        sampler.load_state_dict({"epoch": 0, "position": 2, "dataset_size": 6})
