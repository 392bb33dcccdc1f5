# Memory extents of arrays: the cheap half of the out= overlap check.
#
# Layers: cnnext/_validation.py asks, for every out= buffer, whether
# it shares memory with an input.  The first, sufficient test for "no" is
# that their byte ranges are disjoint, which is what numpy.may_share_memory
# computes; through NumPy's Python entry it costs about 0.3 us a pair, and a
# training step checks a dozen pairs.  Here one call tests a buffer against
# all the inputs.  Only when some range overlaps does _validation run
# numpy.shares_memory's exact test.

cimport numpy as cnp

cnp.import_array()


cdef struct Extent:
    char* low    # first byte
    char* high   # one past the last byte


cdef inline bint extent_of(cnp.ndarray array, Extent* extent) noexcept:
    # The byte range ``array`` can reach; False when it holds no element.
    cdef int axis
    cdef Py_ssize_t length, stride
    cdef char* low = <char*>cnp.PyArray_DATA(array)
    cdef char* high = low + cnp.PyArray_ITEMSIZE(array)
    for axis in range(cnp.PyArray_NDIM(array)):
        length = cnp.PyArray_DIM(array, axis)
        if length == 0:
            return False
        stride = cnp.PyArray_STRIDE(array, axis)
        if stride < 0:
            low += (length - 1) * stride
        else:
            high += (length - 1) * stride
    extent.low = low
    extent.high = high
    return True


def ranges_overlap(cnp.ndarray array, tuple others):
    """ranges_overlap(array, others)

    Whether the byte range of ``array`` overlaps that of any ndarray in
    ``others`` (None entries skipped; anything else counts as overlapping,
    so that the caller's exact test decides).  False means no memory is
    shared; True only that some may be.
    """
    cdef Extent mine, theirs
    if not extent_of(array, &mine):
        return False
    for other in others:
        if other is None:
            continue
        if not cnp.PyArray_Check(other):
            return True
        if extent_of(<cnp.ndarray>other, &theirs) and (
                theirs.low < mine.high and mine.low < theirs.high):
            return True
    return False
