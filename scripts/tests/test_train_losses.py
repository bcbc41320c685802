"""Signs and values of the losses on inputs whose answer is known."""
import torch

from puppetcam_train import losses as LS


def test_hinge():
    t = torch.tensor
    assert LS.d_hinge(t([2.0]), t([-2.0])).item() == 0.0      # confident and right: no loss
    assert LS.d_hinge(t([0.0]), t([0.0])).item() == 2.0
    assert LS.d_hinge(t([-1.0]), t([1.0])).item() == 4.0      # wrong both ways
    assert LS.g_hinge(t([3.0, 1.0])).item() == -2.0           # G wants D(fake) high


def test_feature_matching_and_embedding_match():
    a = [torch.ones(2, 3, 4, 4), torch.zeros(2, 5)]
    assert LS.feature_matching(a, a).item() == 0.0
    b = [torch.ones(2, 3, 4, 4) * 3, torch.ones(2, 5)]
    assert abs(LS.feature_matching(b, a).item() - 1.5) < 1e-6   # (2 + 1) / 2 layers
    real = [x.requires_grad_() for x in (torch.ones(1, 2),)]
    fake = [torch.zeros(1, 2, requires_grad=True)]
    LS.feature_matching(fake, real).backward()
    assert real[0].grad is None and fake[0].grad is not None    # real features are targets
    assert LS.embedding_match(torch.zeros(1, 4), torch.full((1, 4), 0.5)).item() == 0.5
    assert LS.l1(torch.zeros(3), torch.ones(3)).item() == 1.0


def test_perceptual_falls_back_without_weights(tmp_path):
    p = LS.Perceptual(str(tmp_path / "missing.pth"), "")
    assert "none" in p.describe() and "feature matching" in p.describe()
    assert p(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)).item() == 0.0
