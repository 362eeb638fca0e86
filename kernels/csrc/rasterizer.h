// Launchers of the rasterizer's stages, one file each. Every launcher enqueues on `stream`,
// allocates nothing (so a frame can be captured in a CUDA graph) and returns the launch error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "common.h"

namespace splatcast {

// preprocess.cu ---------------------------------------------------------------------------------
struct PreprocessArgs {
    int num_gaussians, num_views, width, height;
    int sh_degree, sh_stride;  // coefficients per Gaussian row: K * 3 padded to sh_stride
    bool half_storage;         // shape and sh are __half (else float); positions are always float
    const float4* means_opacity;
    const void* shape;  // (N, 8): quaternion wxyz, scale xyz, pad
    const void* sh;
    const ViewParams* views;
    float4* splats;  // (V * N) entry records of two float4, see common.h
    uint32_t *depth_keys, *entry_ids, *tile_counts;
};
cudaError_t launch_preprocess(const PreprocessArgs& args, cudaStream_t stream);

// sort.cu: cub radix sorts and the scan. With temp == nullptr, *temp_bytes receives the size. --
cudaError_t depth_sort(void* temp, size_t* temp_bytes, const uint32_t* keys_in, uint32_t* keys_out,
                       const uint32_t* values_in, uint32_t* values_out, int n, int key_bits, cudaStream_t stream);
template <typename Key>  // uint16_t or uint32_t
cudaError_t pair_sort(void* temp, size_t* temp_bytes, const Key* keys_in, Key* keys_out, const uint32_t* values_in,
                      uint32_t* values_out, int n, int key_bits, cudaStream_t stream);
cudaError_t tile_sort(void* temp, size_t* temp_bytes, const uint32_t* loads_in, uint32_t* loads_out,
                      const uint32_t* tiles_in, uint32_t* tiles_out, int n, cudaStream_t stream);
// ends[i]: inclusive prefix sum of tile_counts[entries_sorted[j]] over j <= i.
cudaError_t tile_count_ends(void* temp, size_t* temp_bytes, const uint32_t* entries_sorted, const uint32_t* tile_counts,
                            int64_t* ends, int n, cudaStream_t stream);

// intersect.cu ----------------------------------------------------------------------------------
struct EmitArgs {
    int64_t num_entries;
    int num_gaussians, width, height;
    const uint32_t* entries_sorted;  // depth order
    const int64_t* ends;             // inclusive prefix sum of tile counts in depth order
    const float4* splats;
    int64_t base;      // first global pair index of this chunk
    int64_t capacity;  // pair slots in this chunk
    void* pair_keys;   // uint16_t where short_keys, else uint32_t
    bool short_keys;
    uint32_t* pair_values;
};
cudaError_t launch_emit_pairs(const EmitArgs& args, cudaStream_t stream);
cudaError_t launch_tile_ranges(int64_t num_pairs, uint32_t num_tile_keys, const void* keys_sorted, bool short_keys,
                               int2* ranges, cudaStream_t stream);
// Each tile's list length (key) and index (value), for ordering the blending blocks.
cudaError_t launch_tile_loads(uint32_t num_tiles, const int2* ranges, uint32_t* loads, uint32_t* tiles, cudaStream_t stream);

// blend.cu --------------------------------------------------------------------------------------
struct BlendArgs {
    int num_views, width, height;
    int64_t num_entries;        // views x Gaussians: whether values carry warp masks
    const int2* ranges;         // (V * tiles) [begin, end) into values
    const uint32_t* tile_order; // blocks take tiles in this order (heaviest first), or nullptr
    const uint32_t* values;
    const float4* splats;
    const float* background;  // 3 floats on the device
    uint8_t* const* image_slot;  // device memory holding the (V, H, W, 3) image's address, written when final
    float4* state;            // (V, H, W) colour and +-transmittance between chunks, or nullptr
    bool resume;              // start from state instead of an empty pixel
    bool final;               // write image (else state)
};
cudaError_t launch_blend(const BlendArgs& args, cudaStream_t stream);

// i420.cu ---------------------------------------------------------------------------------------
struct I420Args {
    int num_views, width, height;
    const uint8_t* image;     // (V, H, W, 3)
    const int64_t* layout;    // (V, 3): frame byte offset, frame luma width, column of this view
    uint8_t* out;
};
cudaError_t launch_rgb_to_i420(const I420Args& args, cudaStream_t stream);

}  // namespace splatcast
