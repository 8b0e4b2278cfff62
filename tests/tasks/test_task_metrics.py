"""Every metric against a hand-computed example, and exact accumulation over batches."""

import math

import pytest
import torch

from automtl.errors import DataError
from automtl.tasks import AccuracyMetric, DepthMetric, NormalMetric, PixelL1Metric, SegmentationMetric


def one_hot_logits(labels, classes):
    """Logits whose argmax is ``labels`` ([B,H,W] -> [B,C,H,W])."""
    return torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def test_segmentation_hand_example():
    # 3 classes; 8 pixels of which one is ignored (255)
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 0]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    m = SegmentationMetric(3)
    m.update(one_hot_logits(predicted, 3), target)
    # counted pixels (gt, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0)
    assert m.confusion_matrix().tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU: class 0 = 2/(3+3-2) = 1/2; class 1 = 2/(2+3-2) = 2/3; class 2 = 1/(2+1-1) = 1/2
    out = m.compute()
    assert out["mIoU"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3 * 100)
    assert out["pixel_acc"] == pytest.approx(5 / 7 * 100)
    assert m.higher_is_better == {"mIoU": True, "pixel_acc": True}


def test_segmentation_accumulates_the_confusion_matrix_over_batches():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 5, 5)
    target = torch.randint(0, 4, (6, 5, 5))
    target[0, 0] = 255
    whole = SegmentationMetric(4)
    whole.update(logits, target)
    parts = SegmentationMetric(4)
    for a, b in ((0, 1), (1, 4), (4, 6)):
        parts.update(logits[a:b], target[a:b].unsqueeze(1))  # [B,1,H,W] targets work too
    assert torch.equal(whole.confusion_matrix(), parts.confusion_matrix())
    assert parts.compute() == whole.compute()
    # not the mean of per-batch mIoUs
    per_batch = []
    for a, b in ((0, 1), (1, 4), (4, 6)):
        one = SegmentationMetric(4)
        one.update(logits[a:b], target[a:b])
        per_batch.append(one.compute()["mIoU"])
    assert sum(per_batch) / 3 != pytest.approx(whole.compute()["mIoU"])


def test_segmentation_class_absent_everywhere_does_not_count_and_out_of_range_labels_are_left_out():
    target = torch.tensor([[[0, 0, 1, 7]]])  # 7 is outside 0..2: not counted (as AdaShare does)
    m = SegmentationMetric(3)
    m.update(one_hot_logits(torch.tensor([[[0, 0, 1, 2]]]), 3), target)
    out = m.compute()
    assert out["mIoU"] == pytest.approx(100.0)  # class 2 appears nowhere among counted pixels
    assert out["pixel_acc"] == pytest.approx(100.0)


def test_segmentation_mask_and_low_resolution_prediction():
    m = SegmentationMetric(2)
    logits = torch.tensor([[[[5.0]], [[0.0]]]])  # [1,2,1,1]: class 0 everywhere once upsampled
    target = torch.tensor([[[0, 1], [1, 0]]])
    mask = torch.tensor([[[True, False], [True, True]]])
    m.update(logits, target, mask)
    assert m.confusion_matrix().tolist() == [[2, 0], [1, 0]]


def test_reset_clears_state():
    m = SegmentationMetric(2)
    m.update(one_hot_logits(torch.tensor([[[0, 1]]]), 2), torch.tensor([[[0, 1]]]))
    m.reset()
    assert m.confusion_matrix().sum() == 0
    assert math.isnan(m.compute()["pixel_acc"])


def test_depth_hand_example():
    target = torch.tensor([1.0, 2.0, 4.0, 0.0]).view(1, 1, 1, 4)  # the 0 is invalid
    pred = torch.tensor([1.1, 3.0, 2.0, 5.0]).view(1, 1, 1, 4)
    m = DepthMetric()
    m.update(pred, target)
    out = m.compute()
    assert out["abs_err"] == pytest.approx((0.1 + 1.0 + 2.0) / 3)
    assert out["rel_err"] == pytest.approx((0.1 / 1 + 1.0 / 2 + 2.0 / 4) / 3)
    # delta: 1.1 (within all), 1.5 (within 1.25^2 = 1.5625 and 1.25^3), 2.0 (1.25^3 = 1.953: none)
    assert out["delta_1.25"] == pytest.approx(100 / 3)
    assert out["delta_1.25^2"] == pytest.approx(200 / 3)
    assert out["delta_1.25^3"] == pytest.approx(200 / 3)
    assert m.higher_is_better == {
        "abs_err": False, "rel_err": False, "delta_1.25": True, "delta_1.25^2": True, "delta_1.25^3": True
    }


def test_depth_negative_prediction_is_never_within_and_mask_applies():
    target = torch.tensor([2.0, 2.0, 2.0]).view(1, 3)  # [B,H,W] form
    pred = torch.tensor([-2.0, 2.0, 2.2]).view(1, 1, 1, 3)
    mask = torch.tensor([[True, True, False]]).view(1, 1, 3)
    m = DepthMetric()
    m.update(pred, target.view(1, 1, 3), mask)
    out = m.compute()
    assert out["abs_err"] == pytest.approx(4.0 / 2)
    assert out["delta_1.25"] == pytest.approx(50.0)
    assert out["delta_1.25^3"] == pytest.approx(50.0)


def test_depth_accumulates_exactly_over_batches():
    target = torch.tensor([1.0, 1.0, 1.0, 4.0]).view(4, 1, 1, 1)
    pred = torch.tensor([2.0, 1.0, 1.0, 4.0]).view(4, 1, 1, 1)
    m = DepthMetric()
    m.update(pred[:1], target[:1])  # batch 1: error 1 over 1 pixel
    m.update(pred[1:], target[1:])  # batch 2: error 0 over 3 pixels
    assert m.compute()["abs_err"] == pytest.approx(1 / 4)  # not (1 + 0) / 2


def _tilted(degrees):
    r = math.radians(degrees)
    return [math.sin(r), 0.0, math.cos(r)]


def test_normal_hand_example():
    # prediction at 0, 10, 20 and 45 degrees from the target (0, 0, 1); one pixel has no target
    pred = torch.tensor([_tilted(0), _tilted(10), _tilted(20), _tilted(45), [1.0, 0.0, 0.0]]) * 3.0  # any length
    target = torch.tensor([[0, 0, 1.0]] * 4 + [[0, 0, 0.0]])
    m = NormalMetric()
    m.update(pred.T.reshape(1, 3, 1, 5), target.T.reshape(1, 3, 1, 5))
    out = m.compute()
    assert out["mean_angle"] == pytest.approx((0 + 10 + 20 + 45) / 4, abs=1e-4)
    assert out["median_angle"] == pytest.approx(15.0, abs=1e-3)
    assert out["within_11.25"] == pytest.approx(50.0)
    assert out["within_22.5"] == pytest.approx(75.0)
    assert out["within_30"] == pytest.approx(75.0)
    assert m.higher_is_better["mean_angle"] is False and m.higher_is_better["within_30"] is True


def test_normal_median_over_batches_odd_count():
    m = NormalMetric()
    for degrees in (30.0, 5.0, 17.0):
        m.update(torch.tensor(_tilted(degrees)).view(1, 3, 1, 1), torch.tensor([0, 0, 1.0]).view(1, 3, 1, 1))
    assert m.compute()["median_angle"] == pytest.approx(17.0, abs=1e-3)


def test_pixel_l1_and_accuracy():
    m = PixelL1Metric("kp", "keypoint")
    m.update(torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[0.5, 0.0]]]]))
    m.update(torch.tensor([[[[2.0, 2.0]]]]), torch.tensor([[[[2.0, 2.0]]]]), mask=torch.tensor([[[True, False]]]))
    assert m.compute() == {"l1": pytest.approx(1.5 / 3)}
    a = AccuracyMetric(3)
    a.update(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([1, 2]))
    a.update(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([2]))
    assert a.compute() == {"accuracy": pytest.approx(200 / 3)}


def test_merge_adds_state():
    a, b = DepthMetric(), DepthMetric()
    a.update(torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 1.0))
    b.update(torch.full((1, 1, 1, 2), 1.0), torch.full((1, 1, 1, 2), 1.0))
    a.merge(b)
    assert a.compute()["abs_err"] == pytest.approx(1 / 3)
    with pytest.raises(TypeError):
        a.merge(NormalMetric())


def test_bad_shapes_raise_data_errors():
    with pytest.raises(DataError) as err:
        SegmentationMetric(3, task="seg").update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    assert str(err.value) == (
        "task 'seg': a segmentation prediction must be [batch, 3 classes, height, width], got [1, 2, 4, 4]; "
        "check that the task's head outputs one channel per class"
    )
    with pytest.raises(DataError) as err:
        DepthMetric().update(torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4))
    assert "task 'depth': the depth target has shape [3, 1, 4, 4] but the prediction is [2, 1, 4, 4]" in str(err.value)
