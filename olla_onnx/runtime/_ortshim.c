/*
 * The smallest bridge from Python to onnxruntime's C API.
 *
 * onnxruntime calls RegisterCustomOps(options, api_base) when a session option
 * loads this library (SessionOptions.register_custom_ops_library). The
 * OrtApiBase it passes belongs to the very onnxruntime that Python uses, so
 * keeping the pointer lets Python (ctypes) reach the OrtApi function table:
 * CreateEnv, RegisterAllocator, ... No onnxruntime header is needed.
 * Returning NULL means success and registers no custom op.
 */
#include <stddef.h>

#define OLLA_EXPORT __attribute__((visibility("default")))

static const void *olla_api_base = NULL;

OLLA_EXPORT void *RegisterCustomOps(void *options, const void *api_base) {
    (void)options;
    olla_api_base = api_base;
    return NULL;
}

/* The OrtApiBase* seen by the last RegisterCustomOps call (NULL before any). */
OLLA_EXPORT const void *olla_ort_api_base(void) { return olla_api_base; }
