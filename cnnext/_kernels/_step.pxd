# The step convention: how the compiled executor (_program.pyx) calls a kernel
# of any family without that kernel being compiled into it.
#
# A *step* is one kernel call with its arguments bound: a pointer to a
# ``step_kernel`` function and a ``StepArgs`` record of raw pointers, sizes
# and scalars.  Each kernel family module (_conv_*, _dense_*, _pool_*,
# _optim_*, _activation, _loss) defines its step kernels as thin
# ``noexcept nogil`` adapters that unpack a StepArgs and call the same cdef
# function its def entry point calls, so a step computes bit for bit what
# the corresponding ``cnnext.functional`` call computes.  The module's
# ``step_kernels()`` returns them as PyCapsules named STEP_CAPSULE, keyed by
# (kernel name, "float32" | "float64"); the executor extracts the pointer.
#
# The meaning of each slot of StepArgs is fixed per kernel and documented
# beside its adapter (``p[0]`` x IN, ``p[3]`` y OUT, ...).  Pointers are to
# memory the caller (a Program) owns references to; sizes are validated
# before a step is built (kernels never check).  A kernel returns 0, or a
# positive status the executor reports (for example a label outside the
# classes, or a non-finite loss).

from cpython.pycapsule cimport PyCapsule_New


cdef enum:
    STEP_POINTERS = 10
    STEP_SIZES = 14
    STEP_SCALARS = 6
    STEP_PLANS = 2

cdef struct StepArgs:
    void* p[STEP_POINTERS]          # arrays (IN / OUT / TMP per kernel), NULL when unused
    Py_ssize_t n[STEP_SIZES]        # sizes, geometry and flags
    double f[STEP_SCALARS]          # scalar arguments (learning rate, ...)
    const void* plan[STEP_PLANS]    # family data (conv: a Plan's layouts), read only

ctypedef int (*step_kernel)(const StepArgs* args) noexcept nogil

# Statuses a step may return (0: done).
cdef enum:
    STEP_OK = 0
    STEP_BAD_LABEL = 1        # a label outside [0, classes): nothing written
    STEP_BAD_INDEX = 2        # a pooling index outside its plane: nothing written


cdef extern from *:
    """
    #define CNX_STEP_CAPSULE "cnnext.step_kernel"
    """
    const char* STEP_CAPSULE "CNX_STEP_CAPSULE"


cdef inline object step_capsule(step_kernel kernel):
    """A step kernel as the PyCapsule its module's ``step_kernels()`` returns."""
    return PyCapsule_New(<void*>kernel, STEP_CAPSULE, NULL)
