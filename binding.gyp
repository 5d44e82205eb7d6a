{
  "targets": [
    {
      "target_name": "iobuf",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/iovec.cc",
        "native/memory.cc",
        "native/os-linux.cc",
        "native/pool.cc",
        "native/uring.cc",
        "native/views.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-Wl,-z,nodelete"]
    }
  ]
}
