"""MobileNetV3-Small image tower: parameter counts from Table 2, output, lock(), a training step."""

import pytest

torch = pytest.importorskip("torch")

from train.towers.image_tower import ImageTower, ImageTowerConfig, count_parameters, mobilenet_v3_small_features  # noqa: E402

# Feature extractor of MobileNetV3-Small (Howard et al. 2019, Table 2), counted by hand.
# conv k×k: in·out·k² weights (no bias); BN: 2·C (γ, β); SE on exp channels with s = make_divisible(exp/4, 8):
# exp·s + s + s·exp + exp; a bneck with exp == in has no expansion conv.
#   stem     3×3, 3→16:          432 + BN 32                                                  =     464
#   bneck 1  k3 16/16 SE:  dw 144+32, SE(s=8) 136+144, proj 256+32                            =     744
#   bneck 2  k3 16/72/24:  exp 1152+144, dw 648+144, proj 1728+48                             =   3,864
#   bneck 3  k3 24/88/24:  exp 2112+176, dw 792+176, proj 2112+48                             =   5,416
#   bneck 4  k5 24/96/40 SE:  exp 2304+192, dw 2400+192, SE(s=24) 2328+2400, proj 3840+80     =  13,736
#   bneck 5,6 k5 40/240/40 SE: exp 9600+480, dw 6000+480, SE(s=64) 15424+15600, proj 9600+80 = 2 × 57,264
#   bneck 7  k5 40/120/48 SE: exp 4800+240, dw 3000+240, SE(s=32) 3872+3960, proj 5760+96     =  21,968
#   bneck 8  k5 48/144/48 SE: exp 6912+288, dw 3600+288, SE(s=40) 5800+5904, proj 6912+96     =  29,800
#   bneck 9  k5 48/288/96 SE: exp 13824+576, dw 7200+576, SE(s=72) 20808+21024, proj 27648+192 = 91,848
#   bneck 10,11 k5 96/576/96 SE: exp 55296+1152, dw 14400+1152, SE(s=144) 83088+83520,
#                                proj 55296+192                                            = 2 × 294,096
#   last conv 1×1 96→576: 55296 + BN 1152                                                    =  56,448
#   total (3-channel input)                                                                  = 927,008
# Grey input: the stem has 16·9·(3−1) = 288 fewer weights → 926,720.
FEATURES_RGB = 927_008
FEATURES_GREY = FEATURES_RGB - 16 * 9 * 2  # 926,720
# Projector Linear(576→512)–Hardswish–Linear(512→128): 576·512 + 512 + 512·128 + 128 = 361,088
PROJECTOR = 576 * 512 + 512 + 512 * 128 + 128
PAPER_BUDGET = 1_290_000  # the reference paper's 1.29 M image tower


def test_feature_extractor_matches_table2_count():
    assert count_parameters(mobilenet_v3_small_features(in_channels=3)) == FEATURES_RGB
    tower = ImageTower()
    assert count_parameters(tower.features) == FEATURES_GREY == 926_720
    assert count_parameters(tower.projector) == PROJECTOR == 361_088
    assert count_parameters(tower) == FEATURES_GREY + PROJECTOR == 1_287_808 <= PAPER_BUDGET


def test_output_shape_and_unit_norm():
    tower = ImageTower().eval()
    images = torch.rand(3, 1, 64, 256)
    with torch.no_grad():
        z = tower(images)
        assert tower.features(images).shape == (3, 576, 2, 8)  # output stride 32
    assert z.shape == (3, 128)
    assert torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert tower(torch.rand(2, 1, 32, 128)).shape == (2, 128)  # any size: the pool is global


def test_width_mult_is_fixed():
    with pytest.raises(ValueError):
        ImageTowerConfig(width_mult=0.75)


def test_lock_freezes_what_it_says_and_is_idempotent():
    tower = ImageTower()
    total = count_parameters(tower)
    tower.lock(0)
    assert count_parameters(tower, trainable_only=True) == PROJECTOR
    tower.lock(2)
    last_two = count_parameters(tower.features[-2:])
    assert last_two == 294_096 + 56_448  # bneck 11 + last conv, from the table above
    assert count_parameters(tower, trainable_only=True) == PROJECTOR + last_two
    tower.lock(2)  # same call again: same state
    assert count_parameters(tower, trainable_only=True) == PROJECTOR + last_two
    tower.lock(5)
    tower.lock(2)  # going back down refreezes
    assert count_parameters(tower, trainable_only=True) == PROJECTOR + last_two
    for unlock in (None, -1, tower.num_blocks, 99):
        tower.lock(unlock)
        assert count_parameters(tower, trainable_only=True) == total


def test_training_step_changes_only_unfrozen_weights():
    torch.manual_seed(0)
    tower = ImageTower()
    tower.lock(1)  # only the last 1×1 conv block and the projector train
    tower.train()
    assert not tower.features[0].training and tower.features[-1].training  # frozen BN stays in eval
    frozen_before = {k: v.clone() for k, v in tower.features[:-1].state_dict().items()}
    top_before = tower.features[-1][0].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in tower.parameters() if p.requires_grad], lr=1e-2)
    z = tower(torch.rand(4, 1, 64, 256))
    loss = -(z[0] * z[1]).sum()  # pull two embeddings together
    loss.backward()
    assert tower.projector[0].weight.grad is not None
    assert all(p.grad is None for p in tower.features[:-1].parameters())
    opt.step()
    for k, v in tower.features[:-1].state_dict().items():
        assert torch.equal(v, frozen_before[k]), k  # weights and BN running stats untouched
    assert not torch.equal(tower.features[-1][0].weight, top_before)


@pytest.mark.parametrize("keep_width, columns", [(0, 4), (1, 8), (2, 16), (5, 128)])
def test_keep_width_keeps_columns_and_parameters(keep_width, columns):
    """keep_width k: the last k stride-2 stages halve only the height; the weights are the same ones."""
    tower = ImageTower(ImageTowerConfig(image_height=32, image_width=128, keep_width=keep_width))
    assert count_parameters(tower) == 1_287_808
    with torch.no_grad():
        assert tower.features(torch.zeros(1, 1, 32, 128)).shape == (1, 576, 1, columns)
    with pytest.raises(ValueError, match="keep_width"):
        ImageTowerConfig(keep_width=6)


def test_relu_only_swaps_every_hard_swish_and_keeps_the_weights():
    """relu_only: ReLU at the stem, the last 8 bnecks, the last conv and the projector (the 11 + 1 hard-swish
    places of Table 2 and the projector); the SE gates keep their hard-sigmoid; the weights are the same."""

    def count(net, kind):
        return sum(isinstance(m, kind) for m in net.modules())

    paper, relu = ImageTower(), ImageTower(ImageTowerConfig(relu_only=True))
    # hard-swish: stem 1, bnecks 4–11 two each (expand, depthwise) = 16, last conv 1, projector 1
    assert count(paper, torch.nn.Hardswish) == 19 and count(relu, torch.nn.Hardswish) == 0
    assert count(relu, torch.nn.ReLU) == count(paper, torch.nn.ReLU) + 19
    assert count_parameters(relu) == count_parameters(paper) == 1_287_808
    assert relu.load_state_dict(paper.state_dict()) is not None  # same names and shapes
    with torch.no_grad():
        x = torch.rand(2, 1, 32, 128)
        assert not torch.allclose(relu.eval()(x), paper.eval()(x))
