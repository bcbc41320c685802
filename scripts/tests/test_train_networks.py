"""Shapes of E/G/D for the presets, AdaIN driven by psi = P e, the small preset's cost."""
import torch

from puppetcam_train.networks import (NetConfig, PersonalisedGenerator, bake_spectral_norm, build,
                                      count_flops, count_params)


def test_small_shapes():
    cfg = NetConfig.preset_config("small")
    E, G, D = build(cfg, num_videos=3)
    img, r = torch.rand(2, 3, 256, 256) * 2 - 1, torch.rand(2, 3, 256, 256) * 2 - 1
    e = E(img, r)
    assert e.shape == (2, cfg.emb_dim)
    assert E(img[:, None].expand(2, 4, -1, -1, -1), r[:, None].expand(2, 4, -1, -1, -1)).shape == (2, cfg.emb_dim)
    out = G(r, G.adain_params(e))
    assert out.shape == (2, 3, 256, 256) and out.abs().max() <= 1
    D.eval()  # fixed spectral norms, so the two D calls below agree
    score, feats, w = D(out, r, torch.tensor([0, 2]))
    assert score.shape == (2,) and len(feats) == len(cfg.d_channels)  # blocks + extra block
    assert torch.equal(w[1], D.W[2] + D.w0)
    assert torch.allclose(D.score_with(out, r, w)[0], score)


def test_paper_preset_is_big_and_runs_at_low_res():
    cfg = NetConfig.preset_config("paper")
    E, G, D = build(cfg, num_videos=2)
    assert count_params(G) > 30e6 and count_params(E) > 10e6 and count_params(D) > 10e6
    low = NetConfig.preset_config("paper", resolution=64)  # same widths, shape check only
    E, G, D = build(low, num_videos=2)
    r = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        e = E(r, r)
        assert G(r, G.adain_params(e)).shape == (1, 3, 64, 64)
        assert D(r, r, torch.tensor([1]))[0].shape == (1,)


def test_adain_params_are_P_times_e():
    torch.manual_seed(0)
    cfg = NetConfig.preset_config("tiny")
    E, G, D = build(cfg, 1)
    G.eval()
    e = torch.randn(2, cfg.emb_dim)
    psi = G.adain_params(e)
    assert psi.shape == (2, G.psi_dim) and G.psi_dim == sum(G.adain_sizes)
    assert torch.allclose(psi, e @ G.P.weight.T, atol=1e-5)  # spectrally normalised P
    r = (torch.rand(1, 3, 256, 256) * 2 - 1).expand(2, -1, -1, -1)  # same raster twice
    with torch.no_grad():
        a, b = G(r, psi), G(r, psi.flip(0))
        assert torch.allclose(G(r, e=e), a, atol=1e-5)
    assert not torch.allclose(a[0], b[0])  # the embedding changes the image ...
    assert torch.allclose(a[0], b[1])      # ... and only through psi


def test_personalised_generator_and_small_cost():
    cfg = NetConfig.preset_config("small")
    E, G, D = build(cfg, 1)
    r = torch.zeros(1, 3, 256, 256)
    psi = G.adain_params(torch.randn(1, cfg.emb_dim)).detach()
    pg = PersonalisedGenerator(G, psi).eval()
    baked = bake_spectral_norm(pg)
    with torch.no_grad():
        assert torch.allclose(pg(r), G.eval()(r, psi), atol=1e-6)
        assert torch.allclose(baked(r), pg(r), atol=1e-5)
    assert count_flops(baked, r) < 1.5e9  # real time on a 2-core CPU through ONNX Runtime
