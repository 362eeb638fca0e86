// Stage 2a: cub's device-wide radix sorts and scan, with caller-owned temporary storage.
//
// Two sorts, both over every view of the batch at once: entries by depth (31 bits: depths are
// positive floats), then Gaussian/tile pairs by (view | tile) alone. cub's radix sort is stable
// and pairs are emitted in depth order, so the second sort leaves each tile's list front to
// back: the (view | tile | depth) order in ceil(tile bits / 8) passes over the pairs instead of
// ceil((tile bits + 32) / 8). Counts are int: entries and pair slots per pass stay under 2^31.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "rasterizer.h"

namespace splatcast {

cudaError_t depth_sort(void* temp, size_t* temp_bytes, const uint32_t* keys_in, uint32_t* keys_out,
                       const uint32_t* values_in, uint32_t* values_out, int n, cudaStream_t stream) {
    return cub::DeviceRadixSort::SortPairs(temp, *temp_bytes, keys_in, keys_out, values_in, values_out, n, 0, 31, stream);
}

cudaError_t pair_sort(void* temp, size_t* temp_bytes, const uint32_t* keys_in, uint32_t* keys_out,
                      const uint32_t* values_in, uint32_t* values_out, int n, int key_bits, cudaStream_t stream) {
    return cub::DeviceRadixSort::SortPairs(temp, *temp_bytes, keys_in, keys_out, values_in, values_out, n, 0, key_bits,
                                           stream);
}

// Tiles by descending load (8-bit log list lengths): blending blocks start on the longest
// lists, which would otherwise be the tail of the launch.
cudaError_t tile_sort(void* temp, size_t* temp_bytes, const uint32_t* loads_in, uint32_t* loads_out,
                      const uint32_t* tiles_in, uint32_t* tiles_out, int n, cudaStream_t stream) {
    return cub::DeviceRadixSort::SortPairsDescending(temp, *temp_bytes, loads_in, loads_out, tiles_in, tiles_out, n, 0, 8,
                                                     stream);
}

cudaError_t inclusive_sum(void* temp, size_t* temp_bytes, const int64_t* in, int64_t* out, int n, cudaStream_t stream) {
    return cub::DeviceScan::InclusiveSum(temp, *temp_bytes, in, out, n, stream);
}

}  // namespace splatcast
