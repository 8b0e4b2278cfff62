"""Every loss against a direct computation, including ignore labels and invalid pixels."""

import pytest
import torch
import torch.nn.functional as F

from automtl.errors import DataError
from automtl.tasks import ClassificationLoss, DepthLoss, NormalLoss, PixelL1Loss, SegmentationLoss


def test_segmentation_loss_is_mean_negative_log_likelihood_over_counted_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, 3)
    target = torch.tensor([[[0, 1, 2], [255, 1, 0]], [[2, 2, 255], [0, 1, 1]]])
    log_p = logits.log_softmax(1)
    terms = [-log_p[b, target[b, i, j], i, j] for b in range(2) for i in range(2) for j in range(3) if target[b, i, j] != 255]
    assert SegmentationLoss(3)(logits, target) == pytest.approx(float(sum(terms) / len(terms)), rel=1e-6)


def test_segmentation_loss_class_weights_and_mask():
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 1, 4)
    target = torch.tensor([[[0, 1, 1, 0]]])
    mask = torch.tensor([[[True, True, False, True]]])
    weights = [0.5, 2.0]
    log_p = logits.log_softmax(1)[0, :, 0]
    kept = [0, 1, 3]
    num = sum(-weights[target[0, 0, j]] * log_p[target[0, 0, j], j] for j in kept)
    den = sum(weights[target[0, 0, j]] for j in kept)
    got = SegmentationLoss(2, class_weights=weights)(logits, target, mask)
    assert got == pytest.approx(float(num / den), rel=1e-6)


def test_segmentation_loss_all_ignored_is_a_zero_with_gradient():
    logits = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = SegmentationLoss(2)(logits, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_segmentation_loss_rejects_labels_outside_the_classes():
    with pytest.raises(DataError) as err:
        SegmentationLoss(3, task="seg")(torch.zeros(1, 3, 1, 2), torch.tensor([[[1, 5]]]))
    assert str(err.value) == (
        "task 'seg': segmentation target holds label(s) [5] outside 0..2 (ignore label 255); set classes= to the "
        "dataset's class count or map those labels to 255"
    )


def test_segmentation_loss_upsamples_a_low_resolution_prediction_to_the_target():
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 2, 2)
    target = torch.randint(0, 3, (1, 4, 4))
    up = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    assert SegmentationLoss(3)(logits, target) == pytest.approx(float(F.cross_entropy(up, target)), rel=1e-6)


def test_depth_loss_is_l1_over_positive_targets():
    pred = torch.tensor([1.0, 5.0, 2.0, 9.0]).view(1, 1, 2, 2)
    target = torch.tensor([2.0, 0.0, 2.5, float("nan")]).view(1, 1, 2, 2)  # 0 and NaN are not valid
    assert DepthLoss()(pred, target) == pytest.approx((1.0 + 0.5) / 2)
    mask = torch.tensor([[[False, True], [True, True]]])
    assert DepthLoss()(pred, target.view(1, 2, 2), mask) == pytest.approx(0.5)


def test_normal_loss_is_one_minus_mean_cosine_over_valid_pixels():
    pred = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    expected = 1.0 - (1.0 + 2**-0.5) / 2  # third pixel has no normal
    assert NormalLoss()(pred, target) == pytest.approx(expected, rel=1e-6)


def test_pixel_l1_and_classification_losses():
    pred = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 3.0]]]])
    assert PixelL1Loss("edge", "edge")(pred, target) == pytest.approx(3.0 / 4)
    assert PixelL1Loss("edge", "edge")(pred, target, torch.tensor([[[True, False], [False, False]]])) == pytest.approx(1.0)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    direct = -(logits.log_softmax(1)[0, 0] + logits.log_softmax(1)[1, 2]) / 2
    assert ClassificationLoss(3)(logits, labels) == pytest.approx(float(direct), rel=1e-6)


def test_losses_have_gradients():
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    NormalLoss()(pred, torch.randn(2, 3, 4, 4)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_loss_shape_errors_name_the_task():
    with pytest.raises(DataError) as err:
        DepthLoss("d")(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4))
    assert str(err.value) == (
        "task 'd': a depth prediction must be [batch, 1, height, width], got [2, 3, 4, 4]; "
        "check that the task's head outputs 1 channel"
    )
    with pytest.raises(DataError) as err:
        ClassificationLoss(10, "left")(torch.zeros(2, 10), torch.tensor([1, 10]))
    assert str(err.value) == "task 'left': classification target holds label(s) [10] outside 0..9"
    with pytest.raises(DataError) as err:
        NormalLoss("n")(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), mask=torch.ones(1, 3, 3))
    assert "task 'n': the mask has shape [1, 3, 3]; it must cover the target's pixels" in str(err.value)
