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
