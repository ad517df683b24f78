"""NumPy/SciPy reference computations (float64) that the tests compare with."""

import numpy as np
from scipy import special

RTOL = 1e-5
ATOL = 1e-5


def softplus(x):
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    return logits - special.logsumexp(logits, axis=-1, keepdims=True)


def split(raw, min_scale):
    """`(loc, scale)` from a `[loc, raw_scale]` output, as the heads define it."""
    raw = np.asarray(raw, np.float64)
    d = raw.shape[-1] // 2
    return raw[..., :d], softplus(raw[..., d:]) + min_scale


def categorical_kl(teacher_logits, student_logits, temperature):
    log_p = log_softmax(np.asarray(teacher_logits, np.float64) / temperature)
    log_q = log_softmax(np.asarray(student_logits, np.float64) / temperature)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1) * temperature**2


def normal_kl(m1, s1, m2, s2):
    per_output = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    return per_output.sum(axis=-1)


def laplace_kl(m1, b1, m2, b2):
    diff = np.abs(m1 - m2)
    per_output = np.log(b2 / b1) + diff / b2 + b1 / b2 * np.exp(-diff / b1) - 1.0
    return per_output.sum(axis=-1)


def standardize(logits):
    """Logit standardisation as the reference code: (z - mean) / (1e-7 + unbiased std)."""
    logits = np.asarray(logits, np.float64)
    return (logits - logits.mean(-1, keepdims=True)) / (
        1e-7 + logits.std(-1, ddof=1, keepdims=True)
    )


def dkd(teacher_logits, student_logits, temperature, alpha, beta):
    """mdistiller's `dkd_loss` per example, the target being the teacher's top class."""
    t = np.asarray(teacher_logits, np.float64) / temperature
    s = np.asarray(student_logits, np.float64) / temperature
    mask = np.eye(t.shape[-1])[t.argmax(-1)]
    p_t, p_s = np.exp(log_softmax(t)), np.exp(log_softmax(s))
    b_t = np.stack([(p_t * mask).sum(-1), (p_t * (1 - mask)).sum(-1)], -1)
    b_s = np.stack([(p_s * mask).sum(-1), (p_s * (1 - mask)).sum(-1)], -1)
    tckd = np.sum(b_t * (np.log(b_t) - np.log(b_s)), -1)
    rest_t, rest_s = log_softmax(t - 1000.0 * mask), log_softmax(s - 1000.0 * mask)
    nckd = np.sum(np.exp(rest_t) * (rest_t - rest_s), -1)
    return (alpha * tckd + beta * nckd) * temperature**2
