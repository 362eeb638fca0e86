// Shared constants, layouts and the tile footprint of a splat.
//
// The semantics are those of kernels/reference.py (3DGS with gsplat's frustum guard); any change
// there must be mirrored here. Raw pointers and cudaStream_t only: torch lives in bindings.cpp,
// so these files also compile with a bare nvcc.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace splatcast {

constexpr int TILE = 16;                 // pixels per tile side
constexpr int BLOCK = TILE * TILE;       // threads per blending block, one per pixel
constexpr float NEAR_PLANE = 0.01f;      // metres, camera-space z
constexpr float LOW_PASS = 0.3f;         // px^2 added to the 2D covariance
constexpr float ALPHA_MIN = 1.0f / 255.0f;
constexpr float ALPHA_MAX = 0.99f;
constexpr float TRANSMITTANCE_MIN = 1e-4f;
constexpr float FRUSTUM_GUARD = 0.3f;    // Jacobian linearised up to 0.3 half-widths past the edge
constexpr float FOOTPRINT_MARGIN = 1e-2f;  // px; tile bounds err on the side of one more tile
constexpr uint32_t INVALID_KEY = 0xffffffffu;  // culled entries sort last
constexpr int WARP_ROWS = 4, WARP_COLUMNS = 8;  // a blending warp's rectangle of pixels
constexpr int ENTRY_BITS = 24;  // pair values: entry index below, the tile's warp mask above

// Pair values carry, above the entry index, the tile's warp mask (bit band * 2 + column of the
// 8x4 rectangles the splat's footprint meets, see rectangles_met) wherever every entry index of
// the batch fits in ENTRY_BITS: emission computes it once per pair instead of each of a tile's
// four blending blocks once per splat of the list. Larger batches carry bare entry indices and
// the blending blocks compute their own rectangles' bits.
__host__ __device__ inline bool values_carry_masks(int64_t num_entries) { return num_entries <= (int64_t{1} << ENTRY_BITS); }

// One view (OpenCV conventions) as the host has it, copied without rearranging (the host writes
// it before every frame): the top three rows of the 4x4 world-to-camera matrix [R | t] and the
// 3x3 intrinsics, row-major; then the view's depth keys: a depth's float bits (positive floats
// order as their bits) less depth_floor, the bits of a bound under every depth of the view's
// Gaussians, clamped to depth_key_max. Where the host's bounds put every view's span under 2^24,
// the keys are exact in 24 bits and the depth sort takes three radix passes instead of four.
struct ViewParams {
    float world_to_camera[12];
    float intrinsics[9];
    uint32_t depth_floor, depth_key_max;
    float pad;
};

// Per (view, Gaussian) entry, written by preprocess, read by emission and blending: one 32-byte
// record (one memory sector, since both read it in random order) of two float4:
//   splats[2 e]     = (mean_x, mean_y, conic_a, conic_b)       pixels, 1/px^2
//   splats[2 e + 1] = (conic_c, opacity, half2(r, g), half2(b, 0))
// Colours in half precision: 2^-11 relative, a tenth of an 8-bit level.

__host__ __device__ inline int tiles_along(int pixels) { return (pixels + TILE - 1) / TILE; }

#ifdef __CUDACC__

// The opacity-aware footprint of a splat record: the ellipse {d : d^T cov^-1 d <= q} of its 2D
// covariance (a, b, c) (the inverse of the conic) and q, the Mahalanobis radius^2 where
// opacity * exp(-q/2) reaches ALPHA_MIN, with the terms every band's x-extent shares computed
// once. Preprocess counts tiles and emission lists them from these same stored values, so the
// two always agree.
struct Footprint {
    float cov_a, cov_b, cov_c, q;
    float det, inv_cov_c;
    float half_x, half_y;  // the ellipse's half-widths
    float dy_right;        // dy of its rightmost point (its leftmost is at -dy_right)

    __device__ Footprint(float4 a, float4 b) {
        const float inv_det = 1.0f / (a.z * b.x - a.w * a.w);
        cov_a = b.x * inv_det;
        cov_b = -a.w * inv_det;
        cov_c = a.z * inv_det;
        q = 2.0f * logf(fmaxf(b.y / ALPHA_MIN, 1.0f));
        det = cov_a * cov_c - cov_b * cov_b;
        inv_cov_c = 1.0f / cov_c;
        half_x = sqrtf(q * cov_a);
        half_y = sqrtf(q * cov_c);
        dy_right = cov_b * sqrtf(q / cov_a);
    }

    // The x-extent [left, right] (relative to the centre) over the horizontal band dy in
    // [y0, y1]; false when the band misses the ellipse.
    __device__ bool band_extent(float y0, float y1, float& left, float& right) const {
        y0 = fmaxf(y0, -half_y);
        y1 = fminf(y1, half_y);
        if (y0 > y1) return false;
        // On the line dy the ellipse spans x = (b dy +- sqrt(det (q c - dy^2))) / c; its rightmost
        // point (sqrt(q a), b sqrt(q / a)) and leftmost point mirror each other. The right edge is
        // concave in dy and the left edge convex, so over [y0, y1] each extreme is either the
        // ellipse's own or at the band end nearest to it.
        if (dy_right >= y0 && dy_right <= y1) {
            right = half_x;
        } else {
            const float dy = fminf(fmaxf(dy_right, y0), y1);
            right = (cov_b * dy + sqrtf(fmaxf(det * (q * cov_c - dy * dy), 0.0f))) * inv_cov_c;
        }
        if (-dy_right >= y0 && -dy_right <= y1) {
            left = -half_x;
        } else {
            const float dy = fminf(fmaxf(-dy_right, y0), y1);
            left = (cov_b * dy - sqrtf(fmaxf(det * (q * cov_c - dy * dy), 0.0f))) * inv_cov_c;
        }
        return true;
    }
};

__device__ inline int clamp_tile(float t, int tiles) {
    // float clamp first: the value can be far outside int range for splats far off-screen.
    return static_cast<int>(fminf(fmaxf(t, -1.0f), static_cast<float>(tiles)));
}

// Tile rows [row_begin, row_end) whose pixel centres meet the ellipse's vertical extent.
__device__ inline void footprint_rows(float my, const Footprint& f, int tiles_y, int& row_begin, int& row_end) {
    const float half_y = f.half_y + FOOTPRINT_MARGIN;
    // Row ty holds pixel centres y in [ty*T + 0.5, ty*T + T - 0.5].
    row_begin = max(0, clamp_tile(ceilf((my - half_y - (TILE - 0.5f)) / TILE), tiles_y));
    row_end = min(tiles_y, clamp_tile(floorf((my + half_y - 0.5f) / TILE), tiles_y) + 1);
}

// Tile columns [col_begin, col_end) of tile row ty met by the ellipse around (mx, my): the exact
// x-extent of the ellipse within the row's band of pixel centres (AccuTile/SnugBox), widened
// by FOOTPRINT_MARGIN.
__device__ inline void footprint_cols(float mx, float my, const Footprint& f, int ty, int tiles_x, int& col_begin,
                                      int& col_end) {
    // Row ty holds pixel centres y in [ty*T + 0.5, ty*T + T - 0.5], columns likewise in x.
    float left, right;
    if (!f.band_extent(ty * TILE + 0.5f - my - FOOTPRINT_MARGIN, ty * TILE + TILE - 0.5f - my + FOOTPRINT_MARGIN, left,
                       right)) {
        col_begin = col_end = 0;
        return;
    }
    col_begin = max(0, clamp_tile(ceilf((mx + left - FOOTPRINT_MARGIN - (TILE - 0.5f)) / TILE), tiles_x));
    col_end = min(tiles_x, clamp_tile(floorf((mx + right + FOOTPRINT_MARGIN - 0.5f) / TILE), tiles_x) + 1);
    if (col_end < col_begin) col_end = col_begin;
}

// The x-extents [left, right] (absolute pixels, margins included) of the footprint of a splat
// centred at (mx, my) over BANDS bands of WARP_ROWS pixel-centre rows, the first from row
// centre y0; a band the footprint misses gets left > right.
template <int BANDS>
__device__ inline void band_extents(float mx, float my, const Footprint& f, float y0, float (&left)[BANDS],
                                    float (&right)[BANDS]) {
#pragma unroll
    for (int band = 0; band < BANDS; ++band) {
        const float band_y = y0 + WARP_ROWS * band - my;
        if (!f.band_extent(band_y - FOOTPRINT_MARGIN, band_y + (WARP_ROWS - 1) + FOOTPRINT_MARGIN, left[band], right[band])) {
            left[band] = 1.0f;
            right[band] = -1.0f;
            continue;
        }
        left[band] += mx - FOOTPRINT_MARGIN;
        right[band] += mx + FOOTPRINT_MARGIN;
    }
}

// Bit band * COLUMNS + column set where the extents meet the pixel centres of the rectangle of
// WARP_COLUMNS pixels at that band and column, the first column's first centre at x0.
template <int BANDS, int COLUMNS>
__device__ inline uint32_t rectangles_met(const float (&left)[BANDS], const float (&right)[BANDS], float x0) {
    uint32_t mask = 0;
#pragma unroll
    for (int band = 0; band < BANDS; ++band)
#pragma unroll
        for (int column = 0; column < COLUMNS; ++column) {
            const float first = x0 + WARP_COLUMNS * column;
            if (left[band] <= first + (WARP_COLUMNS - 1) && right[band] >= first) mask |= 1u << (band * COLUMNS + column);
        }
    return mask;
}

#endif  // __CUDACC__

}  // namespace splatcast
