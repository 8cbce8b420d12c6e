"""FLOP counting against a hand count, and the throughput fields derived from it."""
import math

import pytest
import torch
from torch import nn

from vlkit.engine.accounting import FlopCount, device_peak_tflops, throughput_fields


def test_a_linear_layer_costs_three_forwards_and_no_grad_work_once():
    layer = nn.Linear(8, 4)
    x = torch.randn(5, 8)
    count = FlopCount()
    with count.counting():
        layer(x).sum()  # 2 * 5 * 8 * 4 = 320 forward FLOPs, trained: x3
        with torch.no_grad():
            layer(x)  # a momentum-model-like pass: no backward, counted once
    assert count.total == 3 * 320 + 320


def test_a_one_layer_attention_model_matches_the_hand_count():
    batch, length, width = 2, 6, 16
    block = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    count = FlopCount()
    with count.counting():
        block(torch.randn(batch, length, width))
    tokens = batch * length
    projections = 2 * tokens * width * (3 * width) + 2 * tokens * width * width  # qkv and output
    attention = 2 * (2 * batch * length * length * width)  # q·k and weights·v
    feed_forward = 2 * (2 * tokens * width * 32)
    assert count.total == 3 * (projections + attention + feed_forward)


def test_throughput_fields_and_the_peak_table():
    fields = throughput_fields(1e9, samples_per_s=2000.0, peak_tflops=4.0, world_size=2)
    assert fields["tflops"] == pytest.approx(1.0) and fields["mfu"] == pytest.approx(0.25)
    assert "mfu" not in throughput_fields(1e9, 10.0, None)
    assert throughput_fields(None, 10.0, 4.0) == {}
    assert device_peak_tflops(torch.device("cpu")) is None
    assert device_peak_tflops(torch.device("cpu"), 123.0) == 123.0
    with pytest.raises(ValueError, match="peak_tflops=0"):
        device_peak_tflops(torch.device("cpu"), 0)
    assert math.isfinite(fields["model_flops_per_sample"])
