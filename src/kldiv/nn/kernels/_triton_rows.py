"""The Triton source of :mod:`kldiv.nn.kernels._triton` (imported on first use: ``triton.jit`` reads
``TRITON_INTERPRET`` when it decorates). One program per kept row; see :mod:`._triton` for the passes."""

import triton
import triton.language as tl


@triton.jit
def excess(r):
    # e^r - 1 - r: the float32 series of kldiv._rows.weighted_excess on r clamped to [-1/2, 1/2], plus the
    # difference of the direct formula at r and at the clamp, exactly 0 inside it
    c = tl.minimum(tl.maximum(r, -0.5), 0.5)
    h = 1.0 / 40320.0
    h = h * c + 1.0 / 5040.0
    h = h * c + 1.0 / 720.0
    h = h * c + 1.0 / 120.0
    h = h * c + 1.0 / 24.0
    h = h * c + 1.0 / 6.0
    h = h * c + 0.5
    return c * c * h + ((tl.exp(r) - tl.exp(c)) - (r - c))


@triton.jit
def excess_log(y):
    # y - log(1 + y) for y > -1: the series on y clamped to [-1/4, 1/4] (relative error under 4e-8), plus the
    # difference of the direct formula at y and at the clamp, exactly 0 inside it (as excess above)
    c = tl.minimum(tl.maximum(y, -0.25), 0.25)
    h = 1.0 / 12.0
    h = h * c - 1.0 / 11.0
    h = h * c + 1.0 / 10.0
    h = h * c - 1.0 / 9.0
    h = h * c + 1.0 / 8.0
    h = h * c - 1.0 / 7.0
    h = h * c + 1.0 / 6.0
    h = h * c - 1.0 / 5.0
    h = h * c + 1.0 / 4.0
    h = h * c - 1.0 / 3.0
    h = h * c + 0.5
    return c * c * h + ((y - c) - (tl.log(1.0 + y) - tl.log(1.0 + c)))


@triton.jit
def load(ptr, offs, mask, inv_t, other):
    # lanes past the row end read `other`: -inf for the max, 0 where the lane's terms are masked out anyway
    return tl.load(ptr + offs, mask=mask, other=other).to(tl.float32) * inv_t


@triton.jit
def block(p_row, q_row, offs, V, inv_t, m_p, m_q, z_p, z_q, shift):
    # one vocabulary block of both sides after pass 1: probabilities, r = log(q / p) (0 past the row end), and
    # where each side's probability is exactly 0 (its logit -inf)
    mask = offs < V
    a = load(p_row, offs, mask, inv_t, 0.0) - m_p
    b = load(q_row, offs, mask, inv_t, 0.0) - m_q
    r = tl.where(mask, (b - a) - shift, 0.0)
    return offs, mask, tl.exp(a) / z_p, tl.exp(b) / z_q, r, a == -float("inf"), b == -float("inf")


@triton.jit
def kl_term(p, q, r, zero_p, zero_q):
    # p (e^r - 1 - r), the terms summing to KL(P || Q) without cancellation, at every edge: q where p = 0,
    # +inf where q = 0 < p, and q - p (1 + r) above r = 1 (where p may have underflowed and e^r overflow)
    t = tl.where(r > 1.0, q - p * (1.0 + r), p * excess(tl.minimum(r, 1.0)))
    return tl.where(zero_p, q, tl.where(zero_q, float("inf"), t))


@triton.jit
def mix(p, q, r, c):
    # With m = (1 - c) p + c q, 0 < c < 1: the terms p (m / p - 1 - log(m / p)) summing to KL(P || M) (m sums
    # to 1 as p does), and log(m / p), at every edge: c q where p = 0 (or underflowed), log(1 - c) where q = 0,
    # and above r = 1 the terms' direct form, which neither overflows nor cancels there
    high = r > 1.0
    low = tl.minimum(r, 1.0)
    y = c * tl.where(low < -1.0, tl.exp(low) - 1.0, low + excess(low))  # m / p - 1 for r <= 1
    log_mp = tl.where(high, r + tl.log((1.0 - c) * tl.exp(-r) + c),
                      tl.where(low < -1.0, tl.log(1.0 + y), y - excess_log(y)))
    term = tl.where(high, c * (q - p) - p * log_mp, p * excess_log(y))
    return tl.where(p == 0.0, c * q, term), log_mp


@triton.jit
def dense(
    p_ptr, q_ptr, p_stride, q_stride, rows_ptr, g_ptr, g_stride, out_ptr, V, inv_t, scale_ptr, w,
    MEASURE: tl.constexpr, STUDENT: tl.constexpr, GRAD: tl.constexpr, BLOCK: tl.constexpr,
    EARLY_GRAD: tl.constexpr,
):
    # P and Q are the measure's two arguments; STUDENT (0 or 1) says which one is the student. MEASURE: 0 KL,
    # 1 JS with weight w on P, 2 skew KL with alpha w, 3 TVD. EARLY_GRAD: the gradient needs no row sum (KL in
    # the student as Q: q - p) and is stored in pass 2, so there is no pass 3 (two reads of the row, not three)
    pid = tl.program_id(0)
    row = tl.load(rows_ptr + pid)
    p_row, q_row = p_ptr + row * p_stride, q_ptr + row * q_stride
    cols = tl.arange(0, BLOCK)
    m_p = tl.full([], -float("inf"), tl.float32)
    m_q = tl.full([], -float("inf"), tl.float32)
    z_p = tl.full([], 0.0, tl.float32)
    z_q = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):  # pass 1: max and sum of exponentials, online
        offs = start + cols
        mask = offs < V
        xp_ = load(p_row, offs, mask, inv_t, -float("inf"))
        xq_ = load(q_row, offs, mask, inv_t, -float("inf"))
        new_p = tl.maximum(m_p, tl.max(xp_, 0))
        new_q = tl.maximum(m_q, tl.max(xq_, 0))
        # the first block of a row may have no finite logit yet: -inf - -inf must not poison the sums
        z_p = tl.where(new_p == -float("inf"), 0.0, z_p * tl.exp(m_p - new_p)) + tl.sum(
            tl.where(mask & (xp_ > -float("inf")), tl.exp(xp_ - new_p), 0.0), 0)
        z_q = tl.where(new_q == -float("inf"), 0.0, z_q * tl.exp(m_q - new_q)) + tl.sum(
            tl.where(mask & (xq_ > -float("inf")), tl.exp(xq_ - new_q), 0.0), 0)
        m_p, m_q = new_p, new_q
    shift = tl.log(z_q) - tl.log(z_p)
    s0 = tl.full([], 0.0, tl.float32)
    s1 = tl.full([], 0.0, tl.float32)
    s2 = tl.full([], 0.0, tl.float32)
    factor = tl.load(scale_ptr) * inv_t
    g_row = g_ptr + row * g_stride
    for start in range(0, V, BLOCK):  # pass 2: the row form's sums
        offs, mask, p, q, r, zero_p, zero_q = block(p_row, q_row, start + cols, V, inv_t, m_p, m_q, z_p, z_q, shift)
        if MEASURE == 0:
            s0 += tl.sum(tl.where(mask, kl_term(p, q, r, zero_p, zero_q), 0.0), 0)
            if EARLY_GRAD:
                tl.store(g_row + offs, ((q - p) * factor).to(g_ptr.dtype.element_ty), mask=mask)
        elif MEASURE == 1:
            term_p, _ = mix(p, q, r, 1.0 - w)
            term_q, _ = mix(q, p, -r, w)
            s0 += tl.sum(tl.where(mask, term_p, 0.0), 0)
            s1 += tl.sum(tl.where(mask, term_q, 0.0), 0)
        elif MEASURE == 2:
            term, log_mp = mix(p, q, r, 1.0 - w)
            s0 += tl.sum(tl.where(mask, term, 0.0), 0)
            s1 += tl.sum(tl.where(mask & (p > 0.0), p * tl.exp(-log_mp), 0.0), 0)
        else:
            d = p - q
            sign = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
            s0 += tl.sum(tl.where(mask, tl.abs(d), 0.0), 0)
            s1 += tl.sum(tl.where(mask, p * sign, 0.0), 0)
            s2 += tl.sum(tl.where(mask, q * sign, 0.0), 0)
    out = out_ptr + pid * 8
    tl.store(out + 0, s0)
    tl.store(out + 1, s1)
    tl.store(out + 2, s2)
    tl.store(out + 3, z_p)
    tl.store(out + 4, z_q)
    if GRAD and not EARLY_GRAD:
        for start in range(0, V, BLOCK):  # pass 3: the row form's gradient in the student's logits
            offs, mask, p, q, r, zero_p, zero_q = block(p_row, q_row, start + cols, V, inv_t, m_p, m_q, z_p, z_q,
                                                        shift)
            if MEASURE == 0:
                if STUDENT == 0:  # -p (r + KL): 0 where p = 0, +inf where q = 0 < p
                    g = tl.where(p == 0.0, 0.0, -p * (r + s0))
                    g = tl.where(zero_q & (zero_p == 0), float("inf"), g)
                else:
                    g = q - p
            elif MEASURE == 1:
                if STUDENT == 0:
                    _, log_mp = mix(p, q, r, 1.0 - w)
                    g = w * (tl.where(p == 0.0, 0.0, -p * log_mp) - p * s0)
                else:
                    _, log_mq = mix(q, p, -r, w)
                    g = (1.0 - w) * (tl.where(q == 0.0, 0.0, -q * log_mq) - q * s1)
            elif MEASURE == 2:
                _, log_mp = mix(p, q, r, 1.0 - w)
                ratio = tl.where(p == 0.0, 0.0, tl.exp(-log_mp))  # p / m
                if STUDENT == 0:
                    g = tl.where(p == 0.0, 0.0, -p * log_mp) - w * p * ratio - p * (s0 - w * s1)
                else:
                    g = q * ((1.0 - w * s1) - (1.0 - w) * ratio)
            else:
                d = p - q
                sign = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
                if STUDENT == 0:
                    g = 0.5 * p * (sign - s1)
                else:
                    g = -0.5 * q * (sign - s2)
            tl.store(g_row + offs, (g * factor).to(g_ptr.dtype.element_ty), mask=mask)
