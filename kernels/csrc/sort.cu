// Stage 2a: cub's device-wide radix sorts and scan, with caller-owned temporary storage.
//
// Two sorts, both over every view of the batch at once: entries by depth (31 bits, or 24 where
// the host's depth bounds allow, see ViewParams), then Gaussian/tile pairs by (view | tile) alone. cub's radix sort is stable
// and pairs are emitted in depth order, so the second sort leaves each tile's list front to
// back: the (view | tile | depth) order in ceil(tile bits / 8) passes over the pairs instead of
// ceil((tile bits + 32) / 8). Pair keys are 16-bit where a batch has under 2^16 tiles (a 1080p
// view has 8160, 16 views at 720p 57,600): a quarter less to move through each pass. Counts are
// int: entries and pair slots per pass stay under 2^31.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <thrust/iterator/transform_iterator.h>

#include "rasterizer.h"

namespace splatcast {

cudaError_t depth_sort(void* temp, size_t* temp_bytes, const uint32_t* keys_in, uint32_t* keys_out,
                       const uint32_t* values_in, uint32_t* values_out, int n, int key_bits, cudaStream_t stream) {
    return cub::DeviceRadixSort::SortPairs(temp, *temp_bytes, keys_in, keys_out, values_in, values_out, n, 0, key_bits,
                                           stream);
}

template <typename Key>
cudaError_t pair_sort(void* temp, size_t* temp_bytes, const Key* keys_in, Key* keys_out, const uint32_t* values_in,
                      uint32_t* values_out, int n, int key_bits, cudaStream_t stream) {
    return cub::DeviceRadixSort::SortPairs(temp, *temp_bytes, keys_in, keys_out, values_in, values_out, n, 0, key_bits,
                                           stream);
}
template cudaError_t pair_sort<uint16_t>(void*, size_t*, const uint16_t*, uint16_t*, const uint32_t*, uint32_t*, int, int,
                                         cudaStream_t);
template cudaError_t pair_sort<uint32_t>(void*, size_t*, const uint32_t*, uint32_t*, const uint32_t*, uint32_t*, int, int,
                                         cudaStream_t);

// Tiles by descending load (8-bit log list lengths): blending blocks start on the longest
// lists, which would otherwise be the tail of the launch.
cudaError_t tile_sort(void* temp, size_t* temp_bytes, const uint32_t* loads_in, uint32_t* loads_out,
                      const uint32_t* tiles_in, uint32_t* tiles_out, int n, cudaStream_t stream) {
    return cub::DeviceRadixSort::SortPairsDescending(temp, *temp_bytes, loads_in, loads_out, tiles_in, tiles_out, n, 0, 8,
                                                     stream);
}

namespace {

struct TileCountOf {
    const uint32_t* tile_counts;
    __host__ __device__ int64_t operator()(uint32_t entry) const { return tile_counts[entry]; }
};

}  // namespace

// The counts are read through the depth order as the scan loads them, not gathered first.
cudaError_t tile_count_ends(void* temp, size_t* temp_bytes, const uint32_t* entries_sorted, const uint32_t* tile_counts,
                            int64_t* ends, int n, cudaStream_t stream) {
    const auto counts = thrust::make_transform_iterator(entries_sorted, TileCountOf{tile_counts});
    return cub::DeviceScan::InclusiveSum(temp, *temp_bytes, counts, ends, n, stream);
}

}  // namespace splatcast
