"""GRIT-VLP grouping: the greedy chain, the collector and the grouped distributed sampler."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlkit.data.grit import GritCollector, greedy_chain
from vlkit.data.samplers import GritSampler


def unit(angles_deg):
    radians = torch.tensor(angles_deg, dtype=torch.float32) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_greedy_chain_follows_the_nearest_unvisited_pair_from_every_start():
    # pairs at 0°, 10°, 90°, 100° (image = text): the chain from each start is fixed by hand
    points = unit([0, 10, 90, 100])
    expected = {0: [0, 1, 2, 3], 1: [1, 0, 2, 3], 2: [2, 3, 1, 0], 3: [3, 2, 1, 0]}
    seen = set()
    for seed in range(30):
        order = greedy_chain(points, points, torch.Generator().manual_seed(seed)).tolist()
        assert order == expected[order[0]]
        seen.add(order[0])
    assert seen == {0, 1, 2, 3}  # the start may be any pair, the last one included


def test_greedy_chain_alternates_image_to_text_then_text_to_image():
    # image k and text k differ: image 0 is closest to text 2, text 2 is closest to image 1
    images = unit([0, 60, 170])
    texts = unit([120, 100, 5])
    for seed in range(20):
        order = greedy_chain(images, texts, torch.Generator().manual_seed(seed)).tolist()
        if order[0] == 0:
            assert order == [0, 2, 1]
            return
    pytest.fail("no seed started at pair 0")


@pytest.mark.parametrize("m", [1, 2, 3, 5, 64, 257])
def test_greedy_chain_is_a_permutation(m):
    x = F.normalize(torch.randn(m, 8), dim=1)
    order = greedy_chain(x, F.normalize(x + 0.3 * torch.randn(m, 8), dim=1), torch.Generator().manual_seed(0))
    assert order.dtype == np.int64 and sorted(order.tolist()) == list(range(m))


def clustered_features(n, clusters=8, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=generator), dim=1)
    labels = torch.randint(clusters, (n,), generator=generator)
    image = F.normalize(centres[labels] + 0.2 * torch.randn(n, dim, generator=generator), dim=1)
    text = F.normalize(centres[labels] + 0.2 * torch.randn(n, dim, generator=generator), dim=1)
    return image, text


# queue 96, block 32: remainders that are empty, a multiple of the block, smaller than a block
@pytest.mark.parametrize("n", [96, 192, 160, 100, 7, 1])
def test_collector_groups_everything_it_saw_exactly_once(n):
    image, text = clustered_features(n)
    collector = GritCollector(queue_size=96, search_space=32, seed=0)
    for start in range(0, n, 10):
        stop = min(n, start + 10)
        collector.add(torch.arange(start, stop) + 2**40, image[start:stop], text[start:stop])
    collector.flush()
    grouped = collector.grouped
    assert grouped.dtype == np.int64
    assert sorted(grouped.tolist()) == [2**40 + i for i in range(n)]  # exact beyond float32's 2**24


def mean_in_batch_similarity(order, image, text, batch):
    sims = []
    for start in range(0, len(order) - batch + 1, batch):
        rows = torch.as_tensor(order[start:start + batch])
        s = image[rows] @ text[rows].t()
        sims.append((s.sum() - s.diagonal().sum()) / (batch * (batch - 1)))
    return torch.stack(sims).mean().item()


def test_grouped_batches_hold_more_similar_pairs_than_random_batches():
    n, batch = 512, 16
    image, text = clustered_features(n)
    collector = GritCollector(queue_size=256, search_space=128, seed=0)
    collector.add(torch.arange(n), image, text)
    collector.flush()
    grouped = mean_in_batch_similarity(collector.grouped, image, text, batch)
    shuffled = mean_in_batch_similarity(torch.randperm(n).numpy(), image, text, batch)
    assert grouped > shuffled + 0.3


def test_collector_state_round_trip_continues_identically():
    image, text = clustered_features(150)
    whole = GritCollector(64, 32, seed=3)
    part = GritCollector(64, 32, seed=3)
    whole.add(torch.arange(100), image[:100], text[:100])
    part.add(torch.arange(100), image[:100], text[:100])
    restored = GritCollector(64, 32, seed=3)
    restored.load_state_dict(part.state_dict())
    for collector in (whole, restored):
        collector.add(torch.arange(100, 150), image[100:], text[100:])
        collector.flush()
    assert restored.grouped.tolist() == whole.grouped.tolist()


def make_samplers(n, world, batch, epoch_order):
    samplers = []
    for rank in range(world):
        sampler = GritSampler(range(n), batch_size=batch, queue_size=64, search_space=32,
                              num_replicas=world, rank=rank, seed=0)
        sampler.order = epoch_order
        sampler.epoch = 1
        samplers.append(sampler)
    return samplers


@pytest.mark.parametrize("n,world,batch", [(100, 1, 8), (100, 3, 8), (96, 4, 8), (5, 2, 8), (7, 3, 2), (64, 2, 16)])
def test_grouped_epoch_gives_every_example_in_whole_chunks_on_every_rank(n, world, batch):
    # chains from each rank (with a padding duplicate and one example never observed)
    chains = [np.arange(n - 1)[rank::world] for rank in range(world)]
    chains[0] = np.concatenate([chains[0], chains[0][:1]])
    sampler = GritSampler(range(n), batch_size=batch, queue_size=64, search_space=32, num_replicas=world, rank=0)
    order = sampler._next_order(chains, epoch=1)
    assert sorted(order.tolist()) == list(range(n))

    samplers = make_samplers(n, world, batch, order)
    shares = [[key[0] for key in s] for s in samplers]
    assert len({math.ceil(len(share) / batch) for share in shares}) == 1  # equal batch counts
    assert set().union(*map(set, shares)) == set(range(n))
    chunks = {tuple(order[i:i + batch]) for i in range(0, n, batch)}
    for share in shares:  # every batch the loader cuts is one chunk of the order
        for start in range(0, len(share), batch):
            assert tuple(share[start:start + batch]) in chunks
    assert all(len(share) == len(s) for share, s in zip(shares, samplers))


def test_grouped_epoch_resumes_from_its_position():
    n, world, batch = 80, 2, 8
    order = np.random.default_rng(0).permutation(n)
    full = [list(s) for s in make_samplers(n, world, batch, order)]
    consumed = 2 * batch  # two batches per rank done
    resumed = make_samplers(n, world, batch, order)
    for rank, sampler in enumerate(resumed):
        sampler.mark_consumed(consumed)
        state = sampler.state_dict()
        fresh = make_samplers(n, world, batch, None)[rank]
        fresh.load_state_dict(state)
        assert list(fresh) == full[rank][consumed:]


def test_sampler_collects_and_orders_the_next_epoch_from_the_features():
    n, batch = 128, 16
    image, text = clustered_features(n, clusters=8)
    sampler = GritSampler(range(n), batch_size=batch, queue_size=64, search_space=64, seed=0)
    epoch0 = [index for index, _ in sampler]
    assert sorted(epoch0) == list(range(n))
    for start in range(0, n, batch):
        rows = torch.tensor(epoch0[start:start + batch])
        sampler.observe({"sample_index": rows}, {"itc_embeddings": (image[rows], text[rows])})
    sampler.set_epoch(1)
    epoch1 = np.array([index for index, _ in sampler])
    assert sorted(epoch1.tolist()) == list(range(n))
    assert mean_in_batch_similarity(epoch1, image, text, batch) > mean_in_batch_similarity(
        np.array(epoch0), image, text, batch) + 0.2


def test_sampler_without_itc_embeddings_says_what_to_switch_on():
    sampler = GritSampler(range(8), batch_size=4, queue_size=8, search_space=4)
    with pytest.raises(KeyError, match="loss_names.itc=1"):
        sampler.observe({"sample_index": torch.arange(4)}, {"loss": torch.tensor(0.0)})
