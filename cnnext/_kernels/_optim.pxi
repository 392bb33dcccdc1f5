# Optimiser update kernels: one pass over a parameter and its state per step.
# The shared source of the _optim_baseline, _optim_x86_64_v3 and
# _optim_x86_64_v4 modules, which setup.py compiles with their instruction-set
# flags (at batch 1 the update of a dense layer's weights is a good part of a
# training step, and it runs two to four times the baseline's vector width).
#
# Layers: cnnext.optim checks the parameters, gradients and state arrays once
# per epoch (``Optimizer._bind``: same size and dtype, C-contiguous, the
# updated ones writeable) and hands each step's arrays, flat, to the def
# functions here, which release the GIL and update in place, element by
# element.  The update rules are torch.optim's, one rounding per operation,
# in the parameter's dtype: no multiply-add is fused in any build (the pragma
# below), so every build gives the results of the same formulas written as
# NumPy ufuncs.  A pass over a parameter takes a fraction of a microsecond for
# the small layers of per-image training, where NumPy took several ufunc
# calls and temporaries per parameter.
#
# The loops are inline helpers whose options are constants at every call
# site, so gcc drops the untaken branches and vectorises each variant.

cdef extern from *:
    """
    /* One rounding per operation: a fused multiply-add (which the x86-64-v3
       and v4 flags allow gcc to form) would round once. */
    #if defined(__clang__)
    #pragma clang fp contract(off)
    #elif defined(__GNUC__)
    #pragma GCC optimize("fp-contract=off")
    #elif defined(_MSC_VER)
    #pragma fp_contract(off)
    #endif
    """

from cython cimport floating
from libc.math cimport sqrt

include "_compiled_isa.pxi"


cdef inline void sgd_loop(floating* param,          # IN/OUT (n,)
                          const floating* grad,     # IN  (n,)
                          floating* buffer,         # IN/OUT (n,) momentum buffer
                          Py_ssize_t n, floating lr, floating momentum, floating decay,
                          const bint with_decay, const bint with_momentum,
                          const bint nesterov) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, buf
    for i in range(n):
        g = grad[i]
        if with_decay:
            g = g + param[i] * decay
        if with_momentum:
            buf = buffer[i] * momentum + g
            buffer[i] = buf
            g = g + momentum * buf if nesterov else buf
        param[i] = param[i] - g * lr


cdef void sgd_pass(floating* param,         # IN/OUT (n,)
                   const floating* grad,    # IN  (n,)
                   floating* buf,           # IN/OUT (n,) momentum buffer, or NULL
                   Py_ssize_t n, double lr, double momentum, double weight_decay,
                   bint nesterov) noexcept nogil:
    cdef floating f_lr = <floating>lr, f_momentum = <floating>momentum
    cdef floating f_decay = <floating>weight_decay
    if buf == NULL:
        if f_decay != 0:
            sgd_loop(param, grad, buf, n, f_lr, 0, f_decay, True, False, False)
        else:
            sgd_loop(param, grad, buf, n, f_lr, 0, 0, False, False, False)
    elif nesterov:
        if f_decay != 0:
            sgd_loop(param, grad, buf, n, f_lr, f_momentum, f_decay, True, True, True)
        else:
            sgd_loop(param, grad, buf, n, f_lr, f_momentum, 0, False, True, True)
    else:
        if f_decay != 0:
            sgd_loop(param, grad, buf, n, f_lr, f_momentum, f_decay, True, True, False)
        else:
            sgd_loop(param, grad, buf, n, f_lr, f_momentum, 0, False, True, False)


def sgd_step(floating[::1] param,         # IN/OUT (n,)
             const floating[::1] grad,    # IN  (n,)
             floating[::1] buffer,        # IN/OUT (n,) momentum buffer, or None
             double lr, double momentum, double weight_decay, bint nesterov):
    """sgd_step(param, grad, buffer, lr, momentum, weight_decay, nesterov)

    One step of SGD (torch.optim.SGD, no dampening) in place::

        g = grad + weight_decay * param                  (when weight_decay != 0)
        buffer = buffer * momentum + g                   (when buffer is given;
                                                          zeros before the first step)
        g = g + momentum * buffer (nesterov) or buffer   (when buffer is given)
        param = param - g * lr
    """
    cdef floating* buf = NULL
    if param.shape[0] == 0:
        return
    if buffer is not None:
        buf = &buffer[0]
    with nogil:
        sgd_pass(&param[0], &grad[0], buf, param.shape[0], lr, momentum, weight_decay,
                 nesterov)


cdef inline void adam_loop(floating* param,         # IN/OUT (n,)
                           const floating* grad,    # IN  (n,)
                           floating* exp_avg,       # IN/OUT (n,)
                           floating* exp_avg_sq,    # IN/OUT (n,)
                           Py_ssize_t n, floating step_size, floating correction,
                           floating beta1, floating beta2, floating keep1, floating keep2,
                           floating eps, floating decay,
                           const bint with_decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, m, v
    for i in range(n):
        g = grad[i]
        if with_decay:
            g = g + param[i] * decay
        m = exp_avg[i] * beta1 + keep1 * g
        v = exp_avg_sq[i] * beta2 + keep2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = param[i] - m / (<floating>sqrt(v) / correction + eps) * step_size


cdef void adam_pass(floating* param,        # IN/OUT (n,)
                    const floating* grad,   # IN  (n,)
                    floating* exp_avg,      # IN/OUT (n,)
                    floating* exp_avg_sq,   # IN/OUT (n,)
                    Py_ssize_t n, double step_size, double bias_correction2_sqrt,
                    double beta1, double beta2, double eps, double weight_decay) noexcept nogil:
    cdef floating f_step = <floating>step_size, f_correction = <floating>bias_correction2_sqrt
    cdef floating f_beta1 = <floating>beta1, f_beta2 = <floating>beta2
    cdef floating f_keep1 = <floating>(1 - beta1), f_keep2 = <floating>(1 - beta2)
    cdef floating f_eps = <floating>eps, f_decay = <floating>weight_decay
    if f_decay != 0:
        adam_loop(param, grad, exp_avg, exp_avg_sq, n, f_step, f_correction, f_beta1, f_beta2,
                  f_keep1, f_keep2, f_eps, f_decay, True)
    else:
        adam_loop(param, grad, exp_avg, exp_avg_sq, n, f_step, f_correction, f_beta1, f_beta2,
                  f_keep1, f_keep2, f_eps, 0, False)


def adam_step(floating[::1] param,        # IN/OUT (n,)
              const floating[::1] grad,   # IN  (n,)
              floating[::1] exp_avg,      # IN/OUT (n,) first moment
              floating[::1] exp_avg_sq,   # IN/OUT (n,) second moment
              double step_size, double bias_correction2_sqrt,
              double beta1, double beta2, double eps, double weight_decay):
    """adam_step(param, grad, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt,
    beta1, beta2, eps, weight_decay)

    One step of Adam (torch.optim.Adam, no AMSGrad) in place, with
    step_size = lr / (1 - beta1**t) and bias_correction2_sqrt = sqrt(1 - beta2**t)::

        g = grad + weight_decay * param                  (when weight_decay != 0)
        exp_avg = exp_avg * beta1 + (1 - beta1) * g
        exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
        param = param - exp_avg / (sqrt(exp_avg_sq) / bias_correction2_sqrt + eps) * step_size
    """
    if param.shape[0] == 0:
        return
    with nogil:
        adam_pass(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], param.shape[0], step_size,
                  bias_correction2_sqrt, beta1, beta2, eps, weight_decay)


cdef inline void adamw_loop(floating* param,         # IN/OUT (n,)
                            const floating* grad,    # IN  (n,)
                            floating* exp_avg,       # IN/OUT (n,)
                            floating* exp_avg_sq,    # IN/OUT (n,)
                            Py_ssize_t n, floating step_size, floating correction,
                            floating beta1, floating beta2, floating keep1, floating keep2,
                            floating eps, floating shrink) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, m, v, p
    for i in range(n):
        g = grad[i]
        p = param[i] * shrink
        m = exp_avg[i] * beta1 + keep1 * g
        v = exp_avg_sq[i] * beta2 + keep2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p - m / (<floating>sqrt(v) / correction + eps) * step_size


def adamw_step(floating[::1] param,        # IN/OUT (n,)
               const floating[::1] grad,   # IN  (n,)
               floating[::1] exp_avg,      # IN/OUT (n,) first moment
               floating[::1] exp_avg_sq,   # IN/OUT (n,) second moment
               double step_size, double bias_correction2_sqrt,
               double beta1, double beta2, double eps, double shrink):
    """adamw_step(param, grad, exp_avg, exp_avg_sq, step_size, bias_correction2_sqrt,
    beta1, beta2, eps, shrink)

    One step of AdamW (torch.optim.AdamW, no AMSGrad) in place: Adam's
    update (see ``adam_step``, without weight decay) of the parameter shrunk
    first by shrink = 1 - lr * weight_decay (decoupled weight decay)::

        param = param * shrink
        exp_avg = exp_avg * beta1 + (1 - beta1) * grad
        exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        param = param - exp_avg / (sqrt(exp_avg_sq) / bias_correction2_sqrt + eps) * step_size
    """
    cdef Py_ssize_t n = param.shape[0]
    cdef floating f_step = <floating>step_size, f_correction = <floating>bias_correction2_sqrt
    cdef floating f_beta1 = <floating>beta1, f_beta2 = <floating>beta2
    cdef floating f_keep1 = <floating>(1 - beta1), f_keep2 = <floating>(1 - beta2)
    cdef floating f_eps = <floating>eps, f_shrink = <floating>shrink
    if n == 0:
        return
    with nogil:
        adamw_loop(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], n, f_step, f_correction,
                   f_beta1, f_beta2, f_keep1, f_keep2, f_eps, f_shrink)


cdef inline void rmsprop_loop(floating* param,         # IN/OUT (n,)
                              const floating* grad,    # IN  (n,)
                              floating* square_avg,    # IN/OUT (n,)
                              floating* grad_avg,      # IN/OUT (n,) centred only
                              floating* buffer,        # IN/OUT (n,) momentum only
                              Py_ssize_t n, floating lr, floating alpha, floating keep,
                              floating eps, floating decay, floating momentum,
                              const bint with_decay, const bint centered,
                              const bint with_momentum) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, s, a, avg, buf
    for i in range(n):
        g = grad[i]
        if with_decay:
            g = g + param[i] * decay
        s = square_avg[i] * alpha + keep * g * g
        square_avg[i] = s
        if centered:
            a = grad_avg[i] * alpha + keep * g
            grad_avg[i] = a
            avg = <floating>sqrt(s - a * a) + eps
        else:
            avg = <floating>sqrt(s) + eps
        if with_momentum:
            buf = buffer[i] * momentum + g / avg
            buffer[i] = buf
            param[i] = param[i] - buf * lr
        else:
            param[i] = param[i] - g / avg * lr


def rmsprop_step(floating[::1] param,        # IN/OUT (n,)
                 const floating[::1] grad,   # IN  (n,)
                 floating[::1] square_avg,   # IN/OUT (n,)
                 floating[::1] grad_avg,     # IN/OUT (n,) or None (not centred)
                 floating[::1] buffer,       # IN/OUT (n,) or None (no momentum)
                 double lr, double alpha, double eps, double weight_decay, double momentum):
    """rmsprop_step(param, grad, square_avg, grad_avg, buffer, lr, alpha, eps,
    weight_decay, momentum)

    One step of RMSprop (torch.optim.RMSprop) in place::

        g = grad + weight_decay * param                  (when weight_decay != 0)
        square_avg = square_avg * alpha + (1 - alpha) * g * g
        grad_avg = grad_avg * alpha + (1 - alpha) * g    (centred: grad_avg given)
        avg = sqrt(square_avg - grad_avg * grad_avg) + eps   (centred)
              or sqrt(square_avg) + eps
        buffer = buffer * momentum + g / avg, param = param - buffer * lr
                                                         (buffer given)
        or param = param - g / avg * lr
    """
    cdef Py_ssize_t n = param.shape[0]
    cdef floating f_lr = <floating>lr, f_alpha = <floating>alpha
    cdef floating f_keep = <floating>(1 - alpha), f_eps = <floating>eps
    cdef floating f_decay = <floating>weight_decay, f_momentum = <floating>momentum
    cdef floating* gavg = NULL
    cdef floating* buf = NULL
    cdef bint with_decay = f_decay != 0
    if n == 0:
        return
    if grad_avg is not None:
        gavg = &grad_avg[0]
    if buffer is not None:
        buf = &buffer[0]
    with nogil:
        # Each combination its own instance, so gcc drops the untaken branches.
        if gavg == NULL and buf == NULL:
            if with_decay:
                rmsprop_loop(&param[0], &grad[0], &square_avg[0], gavg, buf, n, f_lr, f_alpha,
                             f_keep, f_eps, f_decay, 0, True, False, False)
            else:
                rmsprop_loop(&param[0], &grad[0], &square_avg[0], gavg, buf, n, f_lr, f_alpha,
                             f_keep, f_eps, 0, 0, False, False, False)
        elif gavg == NULL:
            rmsprop_loop(&param[0], &grad[0], &square_avg[0], gavg, buf, n, f_lr, f_alpha,
                         f_keep, f_eps, f_decay, f_momentum, with_decay, False, True)
        elif buf == NULL:
            rmsprop_loop(&param[0], &grad[0], &square_avg[0], gavg, buf, n, f_lr, f_alpha,
                         f_keep, f_eps, f_decay, 0, with_decay, True, False)
        else:
            rmsprop_loop(&param[0], &grad[0], &square_avg[0], gavg, buf, n, f_lr, f_alpha,
                         f_keep, f_eps, f_decay, f_momentum, with_decay, True, True)


include "_optim_steps.pxi"
