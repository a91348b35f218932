"""Distillation losses: pure functions (and one small module) with their sources' equations.

The functions are what terms (:mod:`kdlab.terms`, ``kdlab list terms``) compute; they are not
registered by name themselves (a config names terms, never losses). The main ones:

========== ======================== ==============================================
name       entry                    source
========== ======================== ==============================================
ce         :func:`cross_entropy`    hard-label cross-entropy (mean over batch)
kd         :func:`kd_loss`          Hinton et al. 2015, T^2 * KL, batchmean
logits     :func:`logit_matching`   Ba & Caruana 2014; Jacobian paper sec. 10.2
hints      :class:`HintLoss`        FitNets (Romero et al. 2015), learned regressor
attention  :func:`attention_loss`   Jacobian paper eq. 8-9; Zagoruyko & Komodakis 2017
========== ======================== ==============================================

Jacobian paper (:mod:`kdlab.losses.jacobian`): ``jacobian`` = :func:`jacobian_matching` (Prop. 1),
``jacobian_penalty`` = :func:`jacobian_norm_penalty` (Prop. 2, eq. 3), plus
:func:`output_jacobian_term` (section 4.1 selections, eq. 2), :func:`attention_jacobian_loss`
(eq. 10), :func:`noisy_expectation` and :func:`noise_equivalence` (Prop. 1 checked on given networks).

VEM paper appendix A.2 (image-to-image GAN compression): :mod:`~kdlab.losses.image` (L1, SSIM, TV,
perceptual, LPIPS form), :mod:`~kdlab.losses.omgd` (eqs. 13-14), :mod:`~kdlab.losses.gcc` (eqs. 17-18),
:mod:`~kdlab.losses.gan_compression_distill` (eqs. 19-21), :mod:`~kdlab.losses.cat` (eq. 23),
:mod:`~kdlab.losses.cagc` (eqs. 24-27).

Losses take tensors, never models or trainers; teacher inputs are always detached inside.
"""
from kdlab.losses.attention import ATTENTION_MODES, attention_loss, attention_losses, attention_map
from kdlab.losses.ce import cross_entropy
from kdlab.losses.hints import HintLoss
from kdlab.losses.kd import KD_REDUCTIONS, kd_loss
from kdlab.losses.logits import LOGIT_MODES, logit_matching
from kdlab.losses import kdgan  # noqa: F401  (KDGAN game terms, kdlab.losses.kdgan)
from kdlab.losses.kdgan import kdgan_distill_loss
from kdlab.losses.jacobian_noise import noise_equivalence, noisy_expectation
from kdlab.losses.attention_jacobian import attention_jacobian_loss, attention_pool_window
from kdlab.losses.jacobian import (
    JACOBIAN_LOSSES,
    PENALTY_FORMS,
    SELECTIONS,
    check_sigma,
    input_gradients,
    jacobian_cross_entropy,
    jacobian_matching,
    jacobian_norm_penalty,
    output_jacobian_loss,
    output_jacobian_term,
    student_jacobian_match,
    teacher_output_jacobian,
    select_classes,
)

__all__ = [
    "cross_entropy",
    "kd_loss",
    "logit_matching",
    "LOGIT_MODES",
    "HintLoss",
    "attention_map",
    "attention_loss",
    "attention_losses",
    "ATTENTION_MODES",
    "kdgan",
    "kdgan_distill_loss",
    "SELECTIONS",
    "JACOBIAN_LOSSES",
    "PENALTY_FORMS",
    "check_sigma",
    "select_classes",
    "input_gradients",
    "jacobian_matching",
    "jacobian_cross_entropy",
    "output_jacobian_loss",
    "output_jacobian_term",
    "student_jacobian_match",
    "teacher_output_jacobian",
    "jacobian_norm_penalty",
    "attention_pool_window",
    "attention_jacobian_loss",
    "noisy_expectation",
    "noise_equivalence",
]

# GAN losses (GAN compression by distillation, Aguinaldo et al. 2019)
from kdlab.losses.gan import (  # noqa: E402
    bce_discriminator_loss,
    bce_generator_loss,
    generator_mse,
    gradient_penalty,
    hinge_discriminator_loss,
    joint_student_loss,
    wgan_critic_loss,
    wgan_generator_loss,
)

__all__ += ["bce_discriminator_loss", "bce_generator_loss", "wgan_critic_loss", "wgan_generator_loss",
            "gradient_penalty", "generator_mse", "joint_student_loss", "hinge_discriminator_loss"]

# The loss families of the reference frameworks (RepDistiller, mdistiller, torchdistill)
from kdlab.losses.vid import VID_EPS, VID_INIT_VAR, VIDLoss, vid_loss  # noqa: E402
from kdlab.losses.crd import (  # noqa: E402
    CRD_FEAT_DIM,
    CRD_K,
    CRD_MOMENTUM,
    CRD_TEMPERATURE,
    CRDLoss,
    contrast_scores,
    nce_contrast_loss,
)

__all__ += ["vid_loss", "VIDLoss", "VID_EPS", "VID_INIT_VAR", "CRDLoss", "contrast_scores", "nce_contrast_loss",
            "CRD_FEAT_DIM", "CRD_K", "CRD_MOMENTUM", "CRD_TEMPERATURE"]
from kdlab.losses.rkd import RKD_ANGLE_WEIGHT, RKD_DISTANCE_WEIGHT, rkd_loss, rkd_potentials  # noqa: E402
from kdlab.losses.pkt import PKT_EPS, pkt_conditionals, pkt_loss  # noqa: E402
from kdlab.losses.sp import sp_loss, sp_similarity  # noqa: E402
from kdlab.losses.cc import CC_GAMMA, CC_KERNELS, CC_ORDER, cc_correlation, cc_loss  # noqa: E402

__all__ += ["rkd_loss", "rkd_potentials", "RKD_ANGLE_WEIGHT", "RKD_DISTANCE_WEIGHT", "pkt_loss", "pkt_conditionals",
            "PKT_EPS", "sp_loss", "sp_similarity", "cc_loss", "cc_correlation", "CC_GAMMA", "CC_KERNELS", "CC_ORDER"]
from kdlab.losses.dkd import check_labels, dkd_loss, dkd_parts  # noqa: E402
from kdlab.losses.dist import PEARSON_EPS, dist_loss, pearson  # noqa: E402
from kdlab.losses.srd import SRD_FEATURE_MODES, SRD_LOGIT_MODES, srd_loss  # noqa: E402

from kdlab.losses.kd import LOGIT_STD_EPS, standardize_logits  # noqa: E402
from kdlab.losses.chsim import CHSIM_NORMS, channel_correlation, chsim_loss  # noqa: E402
from kdlab.losses.skd import SKD_MODES, skd_direction_loss, skd_instance_loss  # noqa: E402

__all__ += ["LOGIT_STD_EPS", "standardize_logits", "CHSIM_NORMS", "channel_correlation", "chsim_loss", "SKD_MODES",
            "skd_direction_loss", "skd_instance_loss"]
__all__ += ["KD_REDUCTIONS", "dkd_loss", "dkd_parts", "check_labels", "dist_loss", "pearson", "PEARSON_EPS", "srd_loss",
            "SRD_FEATURE_MODES", "SRD_LOGIT_MODES"]
from kdlab.losses.fsp import fsp_loss, fsp_matrix  # noqa: E402
from kdlab.losses.nst import NST_KERNELS, nst_loss  # noqa: E402
from kdlab.losses.ab import AB_REDUCTIONS, ab_loss  # noqa: E402
from kdlab.losses.ft import FT_NORMS, Paraphraser, Translator, ft_loss  # noqa: E402

__all__ += ["fsp_loss", "fsp_matrix", "nst_loss", "NST_KERNELS", "ab_loss", "AB_REDUCTIONS", "ft_loss", "FT_NORMS",
            "Paraphraser", "Translator"]

# Data-free synthesis (DFAD, DAFL, DeepInversion/DFQ generators)
from kdlab.losses.datafree import (  # noqa: E402
    ADV_MODES,
    BN_NORMS,
    L1_REDUCTIONS,
    LOG_BASES,
    activation_loss,
    adversarial_loss,
    batch_statistics,
    bn_statistics_loss,
    information_entropy_loss,
    kl_teacher_student,
    logit_l1,
    one_hot_loss,
)

__all__ += ["logit_l1", "kl_teacher_student", "adversarial_loss", "one_hot_loss", "activation_loss",
            "information_entropy_loss", "batch_statistics", "bn_statistics_loss", "L1_REDUCTIONS", "ADV_MODES",
            "LOG_BASES", "BN_NORMS"]

# MosaicKD (Fang et al. 2021, supplement eqs. 1-7)
from kdlab.losses import mosaic  # noqa: E402,F401
from kdlab.losses.mosaic import (  # noqa: E402
    BALANCE_LOG_BASES,
    adversarial_kl,
    align_loss,
    balance_loss,
    patch_bce,
    patch_discriminator_loss,
)

__all__ += ["mosaic", "BALANCE_LOG_BASES", "balance_loss", "align_loss", "patch_bce", "patch_discriminator_loss",
            "adversarial_kl"]

# Image-to-image GAN compression: the algorithm-specific losses of the VEM paper's appendix A.2 (eqs. 11-27)
from kdlab.losses.image import (  # noqa: E402
    REDUCTIONS as IMAGE_REDUCTIONS,
    TV_NORMS,
    l1_reconstruction,
    lpips_distance,
    perceptual_loss,
    ssim_loss,
    total_variation,
)
from kdlab.losses.omgd import channel_attention, channel_distillation_loss, channel_distillation_losses, style_loss  # noqa: E402
from kdlab.losses.gcc import GRAM_NORMS, gcc_distance, gcc_kd_loss, gram_matrix, gram_style_loss  # noqa: E402
from kdlab.losses.gan_compression_distill import Conv1x1Adapters, FeatureDistillLoss  # noqa: E402
from kdlab.losses.cat import KA_EPS, kernel_alignment, kernel_alignment_loss  # noqa: E402
from kdlab.losses.cagc import (  # noqa: E402
    content_mask,
    foreground_saliency,
    masked_distillation_loss,
    masked_perceptual_loss,
    masked_reconstruction_loss,
    resize_mask,
)

__all__ += ["IMAGE_REDUCTIONS", "TV_NORMS", "l1_reconstruction", "ssim_loss", "total_variation", "perceptual_loss",
            "lpips_distance", "channel_attention", "channel_distillation_loss", "channel_distillation_losses", "style_loss",
            "GRAM_NORMS", "gram_matrix", "gram_style_loss", "gcc_distance", "gcc_kd_loss", "Conv1x1Adapters",
            "FeatureDistillLoss", "KA_EPS", "kernel_alignment", "kernel_alignment_loss", "foreground_saliency",
            "content_mask", "resize_mask", "masked_reconstruction_loss", "masked_distillation_loss",
            "masked_perceptual_loss"]

# The image-to-image teachers' games (Pix2Pix, CycleGAN; VEM eq. 11)
from kdlab.losses.translation_gan import (  # noqa: E402
    GAN_MODES,
    cycle_consistency_loss,
    identity_loss,
    map_discriminator_loss,
    map_generator_loss,
    pix2pix_generator_loss,
)

__all__ += ["GAN_MODES", "map_discriminator_loss", "map_generator_loss", "cycle_consistency_loss", "identity_loss",
            "pix2pix_generator_loss"]
