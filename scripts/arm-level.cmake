# Raises the ARM level llama.cpp is compiled for when cross-compiling.
#
# llama-cpp-sys-2 pins GGML_CPU_ARM_ARCH to plain armv8-a for every aarch64
# Linux build that is not target-cpu=native, after it has forwarded our GGML_*
# variables, so setting the variable alone loses. This file is passed to CMake
# as CMAKE_PROJECT_INCLUDE (the build script forwards CMAKE_* variables), runs
# right after each project() call, before ggml reads the option, and puts
# back the level the integrator asked for in the environment.
if(DEFINED ENV{GGML_CPU_ARM_ARCH} AND NOT "$ENV{GGML_CPU_ARM_ARCH}" STREQUAL "")
  set(GGML_CPU_ARM_ARCH "$ENV{GGML_CPU_ARM_ARCH}" CACHE STRING "ggml: CPU architecture for ARM" FORCE)
endif()
