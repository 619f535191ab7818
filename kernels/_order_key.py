"""The order-preserving integer key of an fp32 score, shared by the Triton top-k / threshold kernels (block_sparse
selection, the estimation top-k, SnapKV's kept-token keys, Quest's page selection): they search and compare keys as
integers (radix passes, bitwise or guided threshold searches) instead of sorting floats."""
import triton
import triton.language as tl


@triton.jit
def order_key(bits):
    """int32 key of fp32 values given as their int32 bits (`x.to(tl.int32, bitcast=True)`): the signed integer
    order of the keys is the float order, and -0.0 gets the key of 0.0 (a float comparison treats them as equal).

    Positive floats already order as their bits; negative ones order backwards, so their 31 low bits are flipped.
    """
    bits = tl.where((bits & 0x7FFFFFFF) == 0, 0, bits)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
