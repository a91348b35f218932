"""Transcriptions of bytedance/OMGD (cited per function) in plain torch, never kdlab's code: the independent
computations of tests/test_fidelity_omgd.py and tests/test_omgd_losses.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def omgd_gram(x):
    """distillers/multiteacher_distiller.py, ``MultiTeacherDistiller.gram``."""
    (bs, ch, h, w) = x.size()
    f = x.view(bs, ch, w * h)
    return f.bmm(f.transpose(1, 2)) / (ch * h * w)


def omgd_tv(img):
    """distillers/multiteacher_distiller.py, ``backward_G_student``: diff_i + diff_j (no lambda)."""
    diff_i = torch.sum(torch.abs(img[:, :, :, 1:] - img[:, :, :, :-1]))
    diff_j = torch.sum(torch.abs(img[:, :, 1:, :] - img[:, :, :-1, :]))
    return diff_i + diff_j


def omgd_connector(seq, x):
    """distillers/base_multiteacher_distiller.py, ``build_feature_connector`` (Conv1x1 no bias, BN, ReLU), applied
    in train mode with the given module's parameters."""
    conv, bn = seq[0], seq[1]
    h = F.conv2d(x, conv.weight)
    h = F.batch_norm(h, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    return F.relu(h)


def omgd_cd(s_acts, t_acts, adapters):
    """distillers/multiteacher_distiller.py, ``calc_CD_loss`` (one device)."""
    losses = []
    for netA, sact, tact in zip(adapters, s_acts, t_acts):
        source, target = omgd_connector(netA, sact), tact.detach()
        source, target = source.mean(dim=(2, 3), keepdim=False), target.mean(dim=(2, 3), keepdim=False)
        losses.append(torch.mean(torch.pow(source - target, 2)))
    return sum(losses)


def omgd_ssim(img1, img2, window_size=11):
    """models/modules/pytorch_ssim.py, ``gaussian``, ``create_window`` and ``_ssim`` (size_average=True)."""
    from math import exp

    gauss = torch.Tensor([exp(-(x - window_size // 2) ** 2 / float(2 * 1.5 ** 2)) for x in range(window_size)])
    _1d = (gauss / gauss.sum()).unsqueeze(1)
    channel = img1.size(1)
    window = _1d.mm(_1d.t()).float().unsqueeze(0).unsqueeze(0).expand(channel, 1, window_size, window_size).contiguous()
    mu1 = F.conv2d(img1, window, padding=window_size // 2, groups=channel)
    mu2 = F.conv2d(img2, window, padding=window_size // 2, groups=channel)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=window_size // 2, groups=channel) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=window_size // 2, groups=channel) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=window_size // 2, groups=channel) - mu1_mu2
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2))
    return ssim_map.mean()


def omgd_student_loss(s_img, t_imgs, vgg, s_acts, t_acts, adapters, w=(10.0, 1e4, 10.0, 1e-5), lambda_cd=10.0,
                      feature_index=1):
    """distillers/multiteacher_distiller.py, ``backward_G_student``: per teacher image SSIM (pytorch_ssim on the raw
    images), style, feature and TV, summed over the teachers, + lambda_CD * CD."""
    lambda_ssim, lambda_style, lambda_feature, lambda_tv = w
    total = 0.0
    for t in t_imgs:
        loss_ssim = (1 - omgd_ssim(s_img, t)) * lambda_ssim
        tf, sf = vgg(t), vgg(s_img)
        loss_style = sum(lambda_style * F.l1_loss(omgd_gram(a), omgd_gram(b)) for a, b in zip(sf, tf))
        loss_feature = lambda_feature * F.l1_loss(sf[feature_index], tf[feature_index])
        total = total + loss_ssim + loss_style + loss_feature + lambda_tv * omgd_tv(s_img)
    return total + omgd_cd(s_acts, t_acts, adapters) * lambda_cd


def hooked(net, x, names):
    """``net(x)`` and the outputs of the modules ``names`` (OMGD's ``add_hook``)."""
    store = {}
    hooks = [dict(net.named_modules())[n].register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o))
             for n in names]
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    return out, [store[n] for n in names]


class _OfficialRB(nn.Module):
    """models/modules/unet_architecture/unet_deepest_generator.py, ``ResnetBlock`` (reflect, BatchNorm)."""

    def __init__(self, dim):
        super().__init__()
        n = nn.BatchNorm2d
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, 4 * dim, 1, bias=False), n(dim * 4), nn.ReLU(True),
            nn.Conv2d(dim * 4, dim * 4, 3, bias=False), n(dim * 4), nn.ReLU(True),
            nn.Conv2d(dim * 4, dim, 1, bias=False), n(dim), nn.ReLU(True), nn.Dropout(0),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False), n(dim))


def _official_block(outer, inner, input_nc=None, sub=None, outermost=False, innermost=False):
    """``UnetSkipConnectionBlock`` of the same file: its layers as a flat list (parameters only matter here)."""
    input_nc = outer if input_nc is None else input_nc
    down = nn.Conv2d(input_nc, inner, 4, 2, 1, bias=False)
    if outermost:
        return [down, _OfficialRB(inner), _OfficialRB(inner), sub, _OfficialRB(2 * inner), _OfficialRB(2 * inner),
                nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1)]
    if innermost:
        return [down, nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
    return [down, nn.BatchNorm2d(inner), _OfficialRB(inner), _OfficialRB(inner), sub,
            nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer), _OfficialRB(outer),
            _OfficialRB(outer)]


def _official_deepest(input_nc, output_nc, num_downs, ngf):
    """``UnetDeepestGenerator.__init__`` transcribed (as nested lists of modules)."""
    b = _official_block(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
        b = _official_block(ngf * 8, ngf * 8, sub=nn.ModuleList(b))
    b = _official_block(ngf * 4, ngf * 8, sub=nn.ModuleList(b))
    b = _official_block(ngf * 2, ngf * 4, sub=nn.ModuleList(b))
    b = _official_block(ngf, ngf * 2, sub=nn.ModuleList(b))
    return nn.ModuleList(_official_block(output_nc, ngf, input_nc=input_nc, sub=nn.ModuleList(b), outermost=True))
