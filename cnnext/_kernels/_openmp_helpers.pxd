# The only module that talks to OpenMP. Kernels cimport this and pass
# effective_num_threads() to prange(num_threads=...).

cdef int effective_num_threads() noexcept nogil
