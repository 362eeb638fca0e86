// Stage 2b: Gaussian/tile pairs in depth order, and each tile's range of the sorted pairs.
//
// Pair indices are 64-bit prefix sums: a batch may make more than 2^31 pairs (huge Gaussians
// over many views). The caller renders such a batch in chunks of `capacity` pairs, each chunk a
// contiguous range of the depth-ordered pair sequence, which keeps every tile's list in depth
// order within and across chunks (see cuda_rasterizer.py).
#include "rasterizer.h"

namespace splatcast {

namespace {

template <typename Key>
__global__ void emit_pairs_kernel(EmitArgs args) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= args.num_entries) return;
    const int64_t end = args.ends[i];
    const int64_t begin = i == 0 ? 0 : args.ends[i - 1];
    const int64_t window_end = args.base + args.capacity;
    if (begin == end || begin >= window_end || end <= args.base) return;

    const uint32_t entry = args.entries_sorted[i];
    const int tiles_x = tiles_along(args.width), tiles_y = tiles_along(args.height);
    const uint32_t view_key = (entry / args.num_gaussians) * static_cast<uint32_t>(tiles_x * tiles_y);
    const float4 a = args.splats[2 * static_cast<int64_t>(entry)];
    const Footprint f(a, args.splats[2 * static_cast<int64_t>(entry) + 1]);
    const int64_t stop = min(end, window_end);

    // The footprint preprocess counted; never more pairs than it counted are written, and slots
    // left unwritten keep the caller's fill (all bits set, past every tile key).
    Key* pair_keys = static_cast<Key*>(args.pair_keys);
    const bool masks = values_carry_masks(args.num_entries);
    int64_t k = begin;
    int row_begin, row_end;
    footprint_rows(a.y, f, tiles_y, row_begin, row_end);
    for (int ty = row_begin; ty < row_end && k < stop; ++ty) {
        int col_begin, col_end;
        footprint_cols(a.x, a.y, f, ty, tiles_x, col_begin, col_end);
        const int64_t row_pairs = col_end - col_begin;
        if (k + row_pairs <= args.base) {
            k += row_pairs;
            continue;
        }
        constexpr int BANDS = TILE / WARP_ROWS;
        float left[BANDS], right[BANDS];
        if (masks) band_extents<BANDS>(a.x, a.y, f, ty * TILE + 0.5f, left, right);
        for (int tx = col_begin; tx < col_end && k < stop; ++tx, ++k) {
            if (k < args.base) continue;
            pair_keys[k - args.base] = static_cast<Key>(view_key + ty * tiles_x + tx);
            const uint32_t mask = masks ? rectangles_met<BANDS, TILE / WARP_COLUMNS>(left, right, tx * TILE + 0.5f) : 0u;
            args.pair_values[k - args.base] = mask << ENTRY_BITS | entry;
        }
    }
}


template <typename Key>
__global__ void tile_ranges_kernel(int64_t num_pairs, uint32_t num_tile_keys, const Key* __restrict__ keys,
                                   int2* __restrict__ ranges) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= num_pairs) return;
    const uint32_t key = keys[i];
    if (key >= num_tile_keys) return;  // unused slots sort last
    if (i == 0 || keys[i - 1] != key) ranges[key].x = static_cast<int>(i);
    if (i == num_pairs - 1 || keys[i + 1] != key) ranges[key].y = static_cast<int>(i + 1);
}

__global__ void tile_loads_kernel(uint32_t num_tiles, const int2* __restrict__ ranges, uint32_t* __restrict__ loads,
                                  uint32_t* __restrict__ tiles) {
    const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= num_tiles) return;
    // The list length on a log scale, 16 steps per doubling in 8 bits: order enough to start the
    // longest lists first, in one radix pass.
    const int length = ranges[t].y - ranges[t].x;
    loads[t] = length == 0 ? 0u : min(255u, 1u + static_cast<uint32_t>(16.0f * log2f(static_cast<float>(length))));
    tiles[t] = t;
}

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

cudaError_t launch_emit_pairs(const EmitArgs& args, cudaStream_t stream) {
    if (args.num_entries == 0 || args.capacity == 0) return cudaSuccess;
    const unsigned blocks = blocks_for(args.num_entries, 256);
    if (args.short_keys)
        emit_pairs_kernel<uint16_t><<<blocks, 256, 0, stream>>>(args);
    else
        emit_pairs_kernel<uint32_t><<<blocks, 256, 0, stream>>>(args);
    return cudaGetLastError();
}

cudaError_t launch_tile_ranges(int64_t num_pairs, uint32_t num_tile_keys, const void* keys_sorted, bool short_keys,
                               int2* ranges, cudaStream_t stream) {
    if (num_pairs == 0) return cudaSuccess;
    const unsigned blocks = blocks_for(num_pairs, 256);
    if (short_keys)
        tile_ranges_kernel<<<blocks, 256, 0, stream>>>(num_pairs, num_tile_keys, static_cast<const uint16_t*>(keys_sorted), ranges);
    else
        tile_ranges_kernel<<<blocks, 256, 0, stream>>>(num_pairs, num_tile_keys, static_cast<const uint32_t*>(keys_sorted), ranges);
    return cudaGetLastError();
}

cudaError_t launch_tile_loads(uint32_t num_tiles, const int2* ranges, uint32_t* loads, uint32_t* tiles, cudaStream_t stream) {
    if (num_tiles == 0) return cudaSuccess;
    tile_loads_kernel<<<blocks_for(num_tiles, 256), 256, 0, stream>>>(num_tiles, ranges, loads, tiles);
    return cudaGetLastError();
}

}  // namespace splatcast
