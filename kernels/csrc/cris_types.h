/* Status codes and enums shared by the CUDA ABI (cris_edge_kernels.h) and its CPU twin
 * (cris_host.h). Plain C. Values are part of the ABI: never renumber. */
#ifndef CRIS_EDGE_TYPES_H
#define CRIS_EDGE_TYPES_H

#define CRIS_EDGE_ABI_VERSION 1

enum cris_status {
    CRIS_OK = 0,
    CRIS_ERR_INVALID_ARGUMENT = 1, /* bad size, null pointer, unknown enum, too small workspace */
    CRIS_ERR_UNSUPPORTED = 2,      /* valid but not implemented: rotated/sheared affine, up < grid */
    CRIS_ERR_CUDA = 3              /* a CUDA runtime call or launch failed; see cris_last_error() */
};

/* Element type of z_v / kernel / bias and of the probability outputs and pre-processed images. */
enum cris_dtype {
    CRIS_FLOAT32 = 0,
    CRIS_FLOAT16 = 1
};

/* What cris_sim_upsample writes. */
enum cris_output {
    CRIS_OUTPUT_PROB = 0, /* probabilities, element type = the input dtype */
    CRIS_OUTPUT_MASK = 1  /* uint8, 1 where probability > threshold, else 0 */
};

/* Channel order of a pre-processing input frame (the network always receives RGB). */
enum cris_color {
    CRIS_COLOR_BGR = 0,
    CRIS_COLOR_RGB = 1
};

#endif /* CRIS_EDGE_TYPES_H */
