/* Blosc 1 on the CPU: unshuffle kernels, and the decoder of one chunk of a batch plan.
 *
 * A plain C library (no Python API), built by setup.py as an optional extension module and
 * called through ctypes by gds_zarr/decode/_blosc_native.py, which releases the GIL for each
 * call. Without it gds_zarr/decode/_cpu.py runs the same plan in Python, with the numpy twin
 * of the unshuffle (gds_zarr/planning/blosc.py: unshuffle_span).
 *
 * Layouts (c-blosc's shuffle.c and bitshuffle's bshuf_untrans_bit_elem), for a block of b bytes
 * and typesize t, m = b / t whole items:
 *   byte shuffle: byte j of item i lies at j * m + i;
 *   bit shuffle (only when m % 8 == 0): bit k of byte j of item i is bit (8 j + k) m + i of the
 *   block, least significant bit first;
 * either way the last b % t bytes of a block are stored as they are.
 *
 * Vector paths: SSE2 (the x86-64 baseline) for typesize 2, 4, 8 and 16, plus AVX2 chosen at run
 * time where the CPU has it (GCC/Clang target attributes: the library is built without -march
 * and runs on any x86-64); a portable scalar path for everything else and for other CPUs.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define GZ_SSE2 1
#endif
#if defined(GZ_SSE2) && (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define GZ_AVX2 1
#endif

#if defined(_WIN32)
#define GZ_EXPORT __declspec(dllexport)
#else
#define GZ_EXPORT __attribute__((visibility("default")))
#endif

#define GZ_NONE 0
#define GZ_BYTE 1
#define GZ_BIT 2

/* ------------------------------------------------------------------------------- scalar */

/* Byte unshuffle of items [i0, m) of one block whose byte plane j (m bytes) is at pl[j]. A
 * constant t lets the compiler vectorize the interleaved stores (st2/st4 on aarch64); the
 * pointers are copied to a local array so that no store through dst can change them. */
static inline __attribute__((always_inline)) void
unshuffle_scalar_t(const uint8_t *const *pl, uint8_t *dst, int64_t m, const int t, int64_t i0)
{
    const uint8_t *p[16];
    for (int j = 0; j < t; j++)
        p[j] = pl[j];
    for (int64_t i = i0; i < m; i++)
        for (int j = 0; j < t; j++)
            dst[i * t + j] = p[j][i];
}

static void unshuffle_scalar(const uint8_t *const *pl, uint8_t *dst, int64_t m, int64_t t,
                             int64_t i0)
{
    switch (t) {
    case 2: unshuffle_scalar_t(pl, dst, m, 2, i0); return;
    case 4: unshuffle_scalar_t(pl, dst, m, 4, i0); return;
    case 8: unshuffle_scalar_t(pl, dst, m, 8, i0); return;
    default:
        for (int64_t j = 0; j < t; j++) {
            const uint8_t *s = pl[j];
            uint8_t *d = dst + j;
            for (int64_t i = i0; i < m; i++)
                d[i * t] = s[i];
        }
    }
}

/* Transpose the 8x8 bit matrix in x (row r = byte r): Hacker's Delight, transpose8. */
static inline uint64_t transpose8(uint64_t x)
{
    uint64_t y;
    y = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
    x ^= y ^ (y << 7);
    y = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
    x ^= y ^ (y << 14);
    y = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
    x ^= y ^ (y << 28);
    return x;
}

/* Bit planes to byte planes for bytes [g0, n8) of the 8 planes of n8 bytes at src: byte g of
 * the 8 planes is an 8x8 bit matrix whose transpose is the byte of items 8g..8g+7 (written
 * to dst + 8g). */
static void bitplanes_scalar(const uint8_t *src, uint8_t *dst, int64_t n8, int64_t g0)
{
    for (int64_t g = g0; g < n8; g++) {
        uint64_t x = 0;
        for (int k = 0; k < 8; k++)
            x |= (uint64_t)src[k * n8 + g] << (8 * k);
        x = transpose8(x);
        for (int q = 0; q < 8; q++)
            dst[8 * g + q] = (uint8_t)(x >> (8 * q));
    }
}

/* --------------------------------------------------------------------------------- SSE2 */

#ifdef GZ_SSE2
/* The unpack network: T planes of 16 bytes (byte j of items 0..15 in v[j]) become 16 whole
 * items in v[0..T-1] (items 16/T * r .. in v[r]). Round w pairs byte groups 2b, 2b+1 of each
 * item range r: the low halves make range 2r, the high halves range 2r + 1. */
#define GZ_NETWORK(V, T, LOG2T, LO1, HI1, LO2, HI2, LO4, HI4, LO8, HI8, VT)              \
    do {                                                                                 \
        VT w_[16];                                                                       \
        _Pragma("GCC unroll 4")                                                          \
        for (int round_ = 0; round_ < (LOG2T); round_++) {                               \
            const int g_ = (T) >> round_, h_ = g_ / 2, r_ = 1 << round_;                 \
            _Pragma("GCC unroll 16")                                                     \
            for (int r = 0; r < r_; r++) {                                               \
                _Pragma("GCC unroll 16")                                                 \
                for (int b = 0; b < h_; b++) {                                           \
                    VT a_ = (V)[r * g_ + 2 * b], c_ = (V)[r * g_ + 2 * b + 1];           \
                    VT lo_, hi_;                                                         \
                    if (round_ == 0) { lo_ = LO1(a_, c_); hi_ = HI1(a_, c_); }           \
                    else if (round_ == 1) { lo_ = LO2(a_, c_); hi_ = HI2(a_, c_); }      \
                    else if (round_ == 2) { lo_ = LO4(a_, c_); hi_ = HI4(a_, c_); }      \
                    else { lo_ = LO8(a_, c_); hi_ = HI8(a_, c_); }                       \
                    w_[2 * r * h_ + b] = lo_;                                            \
                    w_[(2 * r + 1) * h_ + b] = hi_;                                      \
                }                                                                        \
            }                                                                            \
            _Pragma("GCC unroll 16")                                                     \
            for (int k = 0; k < (T); k++)                                                \
                (V)[k] = w_[k];                                                          \
        }                                                                                \
    } while (0)

#define SSE_NET(V, T, LOG2T)                                                             \
    GZ_NETWORK(V, T, LOG2T, _mm_unpacklo_epi8, _mm_unpackhi_epi8, _mm_unpacklo_epi16,           \
               _mm_unpackhi_epi16, _mm_unpacklo_epi32, _mm_unpackhi_epi32,               \
               _mm_unpacklo_epi64, _mm_unpackhi_epi64, __m128i)

static inline __attribute__((always_inline)) int64_t
unshuffle_sse2_t(const uint8_t *const *pl, uint8_t *dst, int64_t m, const int t,
                 const int log2t, int64_t i)
{
    const uint8_t *p[16];
    for (int j = 0; j < t; j++)
        p[j] = pl[j];
    for (; i + 16 <= m; i += 16) {
        __m128i v[16];
#pragma GCC unroll 16
        for (int j = 0; j < t; j++)
            v[j] = _mm_loadu_si128((const __m128i *)(p[j] + i));
        SSE_NET(v, t, log2t);
#pragma GCC unroll 16
        for (int j = 0; j < t; j++)
            _mm_storeu_si128((__m128i *)(dst + i * t + 16 * j), v[j]);
    }
    return i;
}

/* Byte unshuffle of items [i, ...) of a block, 16 at a time; returns the next item. */
static int64_t unshuffle_sse2(const uint8_t *const *pl, uint8_t *dst, int64_t m, int64_t t,
                              int64_t i)
{
    switch (t) {
    case 2: return unshuffle_sse2_t(pl, dst, m, 2, 1, i);
    case 4: return unshuffle_sse2_t(pl, dst, m, 4, 2, i);
    case 8: return unshuffle_sse2_t(pl, dst, m, 8, 3, i);
    case 16: return unshuffle_sse2_t(pl, dst, m, 16, 4, i);
    default: return i;
    }
}

static inline __m128i transpose8_sse2(__m128i x)
{
    const __m128i m1 = _mm_set1_epi64x(0x00AA00AA00AA00AALL);
    const __m128i m2 = _mm_set1_epi64x(0x0000CCCC0000CCCCLL);
    const __m128i m3 = _mm_set1_epi64x(0x00000000F0F0F0F0LL);
    __m128i y;
    y = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 7)), m1);
    x = _mm_xor_si128(x, _mm_xor_si128(y, _mm_slli_epi64(y, 7)));
    y = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 14)), m2);
    x = _mm_xor_si128(x, _mm_xor_si128(y, _mm_slli_epi64(y, 14)));
    y = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 28)), m3);
    x = _mm_xor_si128(x, _mm_xor_si128(y, _mm_slli_epi64(y, 28)));
    return x;
}

/* bitplanes_scalar from byte g of the planes, 16 at a time; returns the next byte. */
static int64_t bitplanes_sse2(const uint8_t *src, uint8_t *dst, int64_t n8, int64_t g)
{
    for (; g + 16 <= n8; g += 16) {
        __m128i v[16];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            v[k] = _mm_loadu_si128((const __m128i *)(src + k * n8 + g));
        SSE_NET(v, 8, 3);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            _mm_storeu_si128((__m128i *)(dst + 8 * g + 16 * k), transpose8_sse2(v[k]));
    }
    return g;
}
#endif /* GZ_SSE2 */

/* --------------------------------------------------------------------------------- AVX2 */

#ifdef GZ_AVX2
#define GZ_AVX2_FN __attribute__((target("avx2")))

/* The 256-bit unpacks work within each 128-bit lane: after the network, lane 0 of v[r] holds
 * range r of items 0..15 and lane 1 range r of items 16..31; two lane permutes per pair of
 * vectors put them in item order. */
#define AVX_NET(V, T, LOG2T)                                                             \
    GZ_NETWORK(V, T, LOG2T, _mm256_unpacklo_epi8, _mm256_unpackhi_epi8, _mm256_unpacklo_epi16,  \
               _mm256_unpackhi_epi16, _mm256_unpacklo_epi32, _mm256_unpackhi_epi32,      \
               _mm256_unpacklo_epi64, _mm256_unpackhi_epi64, __m256i)

static inline __attribute__((always_inline)) GZ_AVX2_FN void
avx2_store_items(uint8_t *dst, __m256i *v, const int t)
{
    /* first 16 items: lane 0 of v[0..t-1]; the next 16: lane 1 */
#pragma GCC unroll 8
    for (int r = 0; r < t / 2; r++) {
        _mm256_storeu_si256((__m256i *)(dst + 32 * r),
                            _mm256_permute2x128_si256(v[2 * r], v[2 * r + 1], 0x20));
        _mm256_storeu_si256((__m256i *)(dst + 16 * t + 32 * r),
                            _mm256_permute2x128_si256(v[2 * r], v[2 * r + 1], 0x31));
    }
}

static inline __attribute__((always_inline)) GZ_AVX2_FN int64_t
unshuffle_avx2_t(const uint8_t *const *pl, uint8_t *dst, int64_t m, const int t,
                 const int log2t)
{
    const uint8_t *p[16];
    for (int j = 0; j < t; j++)
        p[j] = pl[j];
    int64_t i = 0;
    for (; i + 32 <= m; i += 32) {
        __m256i v[16];
#pragma GCC unroll 16
        for (int j = 0; j < t; j++)
            v[j] = _mm256_loadu_si256((const __m256i *)(p[j] + i));
        AVX_NET(v, t, log2t);
        avx2_store_items(dst + i * t, v, t);
    }
    return i;
}

static GZ_AVX2_FN int64_t unshuffle_avx2(const uint8_t *const *pl, uint8_t *dst, int64_t m,
                                         int64_t t)
{
    switch (t) {
    case 2: return unshuffle_avx2_t(pl, dst, m, 2, 1);
    case 4: return unshuffle_avx2_t(pl, dst, m, 4, 2);
    case 8: return unshuffle_avx2_t(pl, dst, m, 8, 3);
    case 16: return unshuffle_avx2_t(pl, dst, m, 16, 4);
    default: return 0;
    }
}

static inline __attribute__((always_inline)) GZ_AVX2_FN __m256i transpose8_avx2(__m256i x)
{
    const __m256i m1 = _mm256_set1_epi64x(0x00AA00AA00AA00AALL);
    const __m256i m2 = _mm256_set1_epi64x(0x0000CCCC0000CCCCLL);
    const __m256i m3 = _mm256_set1_epi64x(0x00000000F0F0F0F0LL);
    __m256i y;
    y = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 7)), m1);
    x = _mm256_xor_si256(x, _mm256_xor_si256(y, _mm256_slli_epi64(y, 7)));
    y = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 14)), m2);
    x = _mm256_xor_si256(x, _mm256_xor_si256(y, _mm256_slli_epi64(y, 14)));
    y = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 28)), m3);
    x = _mm256_xor_si256(x, _mm256_xor_si256(y, _mm256_slli_epi64(y, 28)));
    return x;
}

static GZ_AVX2_FN int64_t bitplanes_avx2(const uint8_t *src, uint8_t *dst, int64_t n8)
{
    int64_t g = 0;
    for (; g + 32 <= n8; g += 32) {
        __m256i v[16];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            v[k] = _mm256_loadu_si256((const __m256i *)(src + k * n8 + g));
        AVX_NET(v, 8, 3);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++)
            v[k] = transpose8_avx2(v[k]);
        avx2_store_items(dst + 8 * g, v, 8);
    }
    return g;
}
#endif /* GZ_AVX2 */

/* ----------------------------------------------------------------------------- dispatch */

/* 0: portable scalar only; 1: SSE2; 2: AVX2 (where the CPU has it). */
static int gz_level = -1;

static int level(void)
{
    if (gz_level < 0) {
        int l = 0;
#ifdef GZ_SSE2
        l = 1;
#endif
#ifdef GZ_AVX2
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2"))
            l = 2;
#endif
        gz_level = l;
    }
    return gz_level;
}

/* The vector level in use (0 scalar, 1 SSE2, 2 AVX2). */
GZ_EXPORT int gz_simd_level(void)
{
    return level();
}

/* Cap the vector level (tests run every path on one machine); returns the level now used. */
GZ_EXPORT int gz_set_simd_level(int cap)
{
    gz_level = -1;
    int l = level();
    gz_level = cap < l ? (cap < 0 ? 0 : cap) : l;
    return gz_level;
}

/* Byte unshuffle of the m whole items of a block whose byte plane j is at pl[j]. */
static void unshuffle_items(const uint8_t *const *pl, uint8_t *dst, int64_t m, int64_t t)
{
    int64_t done = 0;
    int l = level();
#ifdef GZ_AVX2
    if (l >= 2)
        done = unshuffle_avx2(pl, dst, m, t);
#endif
#ifdef GZ_SSE2
    if (l >= 1)
        done = unshuffle_sse2(pl, dst, m, t, done);  /* what AVX2 left: 16 items at most */
#endif
    (void)l;
    unshuffle_scalar(pl, dst, m, t, done);
}

/* Bit planes 8j..8j+7 of a block (m / 8 bytes each, contiguous at src) to byte plane j. */
static void bitplanes(const uint8_t *src, uint8_t *dst, int64_t n8)
{
    int64_t done = 0;
    int l = level();
#ifdef GZ_AVX2
    if (l >= 2)
        done = bitplanes_avx2(src, dst, n8);
#endif
#ifdef GZ_SSE2
    if (l >= 1)
        done = bitplanes_sse2(src, dst, n8, done);
#endif
    (void)l;
    bitplanes_scalar(src, dst, n8, done);
}

/* Undo the shuffle of one block of m * t + tail bytes into dst. Its m * t shuffled bytes are
 * t pieces of m bytes, piece j at pl[j] (byte plane j, or bit planes 8j..8j+7), wherever they
 * lie; the tail bytes, stored as they are, at tail. scratch: m * t bytes for a bit shuffle
 * (t > 1); nothing overlaps dst. */
static void unshuffle_block(const uint8_t *const *pl, const uint8_t *tail, int64_t ntail,
                            uint8_t *dst, int64_t m, int64_t t, int shuffle, uint8_t *scratch)
{
    if (shuffle == GZ_BYTE) {
        unshuffle_items(pl, dst, m, t);
    } else if (t == 1) {
        bitplanes(pl[0], dst, m / 8);
    } else {
        const uint8_t *planes[256];
        for (int64_t j = 0; j < t; j++) {
            bitplanes(pl[j], scratch + j * m, m / 8);
            planes[j] = scratch + j * m;
        }
        unshuffle_items(planes, dst, m, t);
    }
    if (ntail > 0)
        memcpy(dst + m * t, tail, (size_t)ntail);
}

/* Undo the shuffle of the nbytes / block consecutive blocks of block bytes at src into dst.
 *
 * shuffle is 0 (none: a copy), 1 (byte) or 2 (bit, which needs (block / typesize) % 8 == 0;
 * scratch: block bytes, used when typesize > 1). src, dst and scratch must not overlap.
 * Returns 0, or -1 for arguments that describe no valid span (nothing is written then). */
GZ_EXPORT int gz_unshuffle(const uint8_t *src, uint8_t *dst, int64_t nbytes, int64_t block,
                           int64_t typesize, int shuffle, uint8_t *scratch)
{
    if (nbytes < 0 || block <= 0 || typesize <= 0 || typesize > 255 || nbytes % block != 0)
        return -1;
    int64_t t = typesize, m = block / t, whole = m * t;
    if (shuffle != GZ_NONE && shuffle != GZ_BYTE && shuffle != GZ_BIT)
        return -1;
    if (shuffle == GZ_BIT && (m % 8 != 0 || (t > 1 && scratch == NULL)))
        return -1;
    if (shuffle == GZ_NONE || m == 0 || (shuffle == GZ_BYTE && t == 1)) {
        memcpy(dst, src, (size_t)nbytes);
        return 0;
    }
    const uint8_t *pl[256];
    for (int64_t o = 0; o < nbytes; o += block) {
        for (int64_t j = 0; j < t; j++)
            pl[j] = src + o + j * m;
        unshuffle_block(pl, src + o + whole, block - whole, dst + o, m, t, shuffle, scratch);
    }
    return 0;
}

/* ------------------------------------------------------------------ one chunk of a plan */

/* The arrays of gds_zarr.planning.blosc.BloscPlan (int64 unless said), as the plan made them:
 * every stream and block already checked to lie inside its chunk. */
struct gz_plan {
    const uint8_t *base;          /* the buffer stream_src is relative to */
    const int64_t *stream_bounds; /* rows + 1 */
    const int64_t *block_bounds;  /* rows + 1 */
    const int64_t *stream_src, *stream_size, *stream_dst, *stream_dsize;
    const int8_t *stream_codec;   /* -1: stored raw */
    const int64_t *block_dst, *block_size;
    const int8_t *block_shuffle;
    const int64_t *typesize;      /* per row */
    int64_t rows;
};

/* The codecs inside numcodecs' c-blosc (the functions its blosc_d calls), NULL where absent. */
typedef int (*gz_blosclz_fn)(const void *src, int n, void *dst, int cap);
typedef int (*gz_lz4_fn)(const char *src, char *dst, int n, int cap);
typedef int (*gz_zlib_fn)(uint8_t *dst, unsigned long *made, const uint8_t *src, unsigned long n);
typedef size_t (*gz_zstd_fn)(void *ctx, void *dst, size_t cap, const void *src, size_t n);

struct gz_codecs {
    gz_blosclz_fn blosclz;
    gz_lz4_fn lz4;
    gz_zlib_fn zlib;
    gz_zstd_fn zstd;
    void *zstd_ctx;               /* the calling thread's ZSTD_DCtx */
};

/* Decode one stream of n bytes into exactly cap bytes, as c-blosc's blosc_d accepts it. */
static int decode_stream(const struct gz_codecs *c, int codec, const uint8_t *src, int64_t n,
                         uint8_t *dst, int64_t cap)
{
    if (codec < 0) {              /* stored raw: the plan made n == cap */
        memcpy(dst, src, (size_t)cap);
        return 1;
    }
    if (n > INT32_MAX || cap > INT32_MAX)
        return 0;
    switch (codec) {
    case 0:
        return c->blosclz != NULL
               && c->blosclz(src, (int)n, dst, (int)cap) == cap;
    case 1:
        return c->lz4 != NULL
               && c->lz4((const char *)src, (char *)dst, (int)n, (int)cap) == cap;
    case 3: {
        unsigned long made = (unsigned long)cap;
        return c->zlib != NULL
               && c->zlib(dst, &made, src, (unsigned long)n) == 0 /* Z_OK */
               && made == (unsigned long)cap;
    }
    case 4:
        return c->zstd != NULL && c->zstd_ctx != NULL
               && c->zstd(c->zstd_ctx, dst, (size_t)cap, src, (size_t)n)
                  == (size_t)cap;
    default:
        return 0;
    }
}

/* Decode row `row` of plan p into the dst_size bytes at dst, block by block, with the codecs
 * of c (the calling thread's).
 *
 * An unshuffled block: its streams straight into dst. A shuffled block: its streams into
 * scratch (hot in cache), then unshuffled into dst; a stream stored raw is not copied when it
 * is a whole byte plane (split blocks, one stream per byte of the item) or the whole block:
 * the unshuffle reads it where it lies in the chunk. scratch: 2 x the largest shuffled block.
 *
 * Returns 0 when every stream decoded to exactly its size; 1 when a stream did not (corrupt
 * data, a codec missing here): the caller decodes the chunk again with c-blosc or numcodecs,
 * whose result or error is the reference; -1 when the arguments disagree with the plan. */
GZ_EXPORT int gz_blosc_decode_row(const struct gz_plan *p, const struct gz_codecs *c,
                                  uint8_t *scratch, int64_t scratch_size, int64_t row,
                                  uint8_t *dst, int64_t dst_size)
{
    if (row < 0 || row >= p->rows)
        return -1;
    int64_t s = p->stream_bounds[row], s_end = p->stream_bounds[row + 1];
    int64_t t = p->typesize[row];
    if (t <= 0 || t > 255)
        return -1;
    const uint8_t *pl[256];
    for (int64_t b = p->block_bounds[row]; b < p->block_bounds[row + 1]; b++) {
        int64_t bdst = p->block_dst[b], bsize = p->block_size[b];
        int shuffle = p->block_shuffle[b];
        if (bdst < 0 || bsize <= 0 || bdst > dst_size - bsize)
            return -1;
        if (shuffle == GZ_NONE) {
            for (; s < s_end && p->stream_dst[s] < bdst + bsize; s++) {
                int64_t off = p->stream_dst[s] - bdst, dsize = p->stream_dsize[s];
                if (off < 0 || dsize < 0 || off > bsize - dsize)
                    return -1;
                if (!decode_stream(c, p->stream_codec[s], p->base + p->stream_src[s],
                                   p->stream_size[s], dst + bdst + off, dsize))
                    return 1;
            }
            continue;
        }
        if (2 * bsize > scratch_size || (shuffle != GZ_BYTE && shuffle != GZ_BIT))
            return -1;
        int64_t m = bsize / t, whole = m * t;
        if (shuffle == GZ_BIT && m % 8 != 0)
            return -1;
        /* piece j of the shuffled block (m bytes at offset j m) is read from pl[j] */
        for (int64_t j = 0; j < t; j++)
            pl[j] = scratch + j * m;
        const uint8_t *tail = scratch + whole;
        for (; s < s_end && p->stream_dst[s] < bdst + bsize; s++) {
            int64_t off = p->stream_dst[s] - bdst, dsize = p->stream_dsize[s];
            if (off < 0 || dsize < 0 || off > bsize - dsize)
                return -1;
            const uint8_t *src = p->base + p->stream_src[s];
            if (p->stream_codec[s] < 0 && m > 0 && off % m == 0 && dsize % m == 0
                && (dsize == bsize || off + dsize <= whole)) {
                /* raw, whole pieces: read in place (a whole block's tail is no piece: with
                 * m < its tail bytes (off + dsize) / m passes t, and pl holds 256) */
                int64_t j_end = (off + dsize) / m < t ? (off + dsize) / m : t;
                for (int64_t j = off / m; j < j_end; j++)
                    pl[j] = src + (j * m - off);
                if (dsize == bsize)
                    tail = src + whole;
                continue;
            }
            if (!decode_stream(c, p->stream_codec[s], src, p->stream_size[s], scratch + off,
                               dsize))
                return 1;
        }
        unshuffle_block(pl, tail, bsize - whole, dst + bdst, m, t, shuffle, scratch + bsize);
    }
    return s == s_end ? 0 : -1;
}
