# meshlock_bpf_object(NAME SOURCE file.bpf.c [HEADERS h...]): compiles one BPF
# program file with clang against a vmlinux.h generated from the running
# kernel's BTF, and generates its libbpf skeleton in the build tree only.
# Defines the INTERFACE library `NAME_skel` that puts `NAME.skel.h` on the
# include path and links libbpf. Modelled on libbpf-bootstrap's FindBpfObject.
find_program(BPFTOOL_EXE NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
find_program(BPF_CLANG_EXE NAMES clang clang-14 REQUIRED)

set(MESHLOCK_VMLINUX_BTF /sys/kernel/btf/vmlinux CACHE FILEPATH "kernel BTF used to generate vmlinux.h")
set(MESHLOCK_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf-gen)

# One vmlinux.h per build tree, made at build time, not configure time.
if(NOT TARGET meshlock_vmlinux_h)
  add_custom_command(
    OUTPUT ${MESHLOCK_BPF_GEN_DIR}/vmlinux.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${MESHLOCK_BPF_GEN_DIR}
    COMMAND ${BPFTOOL_EXE} btf dump file ${MESHLOCK_VMLINUX_BTF} format c > ${MESHLOCK_BPF_GEN_DIR}/vmlinux.h.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${MESHLOCK_BPF_GEN_DIR}/vmlinux.h.tmp ${MESHLOCK_BPF_GEN_DIR}/vmlinux.h
    COMMENT "vmlinux.h from ${MESHLOCK_VMLINUX_BTF}"
    VERBATIM)
  add_custom_target(meshlock_vmlinux_h DEPENDS ${MESHLOCK_BPF_GEN_DIR}/vmlinux.h)
endif()

function(meshlock_bpf_object name)
  cmake_parse_arguments(ARG "" "SOURCE" "HEADERS" ${ARGN})
  get_filename_component(src ${ARG_SOURCE} ABSOLUTE)
  set(obj ${MESHLOCK_BPF_GEN_DIR}/${name}.bpf.o)
  set(skel ${MESHLOCK_BPF_GEN_DIR}/${name}.skel.h)
  set(headers)
  foreach(h ${ARG_HEADERS})
    get_filename_component(abs ${h} ABSOLUTE)
    list(APPEND headers ${abs})
  endforeach()

  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    set(target_arch x86)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
    set(target_arch arm64)
  else()
    set(target_arch ${CMAKE_SYSTEM_PROCESSOR})
  endif()

  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG_EXE} -target bpf -g -O2 -Wall -Wextra -Werror
            -D__TARGET_ARCH_${target_arch}
            -I${MESHLOCK_BPF_GEN_DIR} -I${CMAKE_SOURCE_DIR}/bpf
            -c ${src} -o ${obj}
    DEPENDS ${src} ${headers} ${MESHLOCK_BPF_GEN_DIR}/vmlinux.h meshlock_vmlinux_h
    COMMENT "BPF ${name}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL_EXE} gen skeleton ${obj} name ${name} > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_skel_gen DEPENDS ${skel})

  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_skel_gen)
  target_include_directories(${name}_skel INTERFACE ${MESHLOCK_BPF_GEN_DIR} ${CMAKE_SOURCE_DIR}/bpf)
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
