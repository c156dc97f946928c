# Imported targets for every dependency, all from Debian packages.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 CONFIG QUIET)
if(NOT TARGET CLI11::CLI11)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
endif()
find_package(GTest REQUIRED)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing)
# HTTP for the Kubernetes API: neon over GnuTLS, so no OpenSSL beside BoringSSL
# (libcurl-gnutls pulls libcrypto.so.3 through libssh2; docs/kubernetes.md).
pkg_check_modules(NEON REQUIRED IMPORTED_TARGET neon)

# BoringSSL (Android's build in Debian). It must be the only TLS library in a
# binary: OpenSSL exports the same symbols, so never link libssl.so.3 or
# anything that pulls it in (Debian's libcpp-httplib.so does).
set(BORINGSSL_LIBDIR /usr/lib/x86_64-linux-gnu/android)
if(NOT EXISTS ${BORINGSSL_LIBDIR}/libssl.so)
  message(FATAL_ERROR "BoringSSL not found in ${BORINGSSL_LIBDIR}: run `make deps`")
endif()
add_library(boringssl INTERFACE)
target_include_directories(boringssl SYSTEM BEFORE INTERFACE /usr/include/android)
target_link_directories(boringssl INTERFACE ${BORINGSSL_LIBDIR})
target_link_libraries(boringssl INTERFACE ssl crypto)
target_link_options(boringssl INTERFACE "-Wl,-rpath,${BORINGSSL_LIBDIR}")
add_library(meshlock::boringssl ALIAS boringssl)

# Debian's cpp-httplib is split into a header and a .so linked against
# OpenSSL, so it cannot live beside BoringSSL: the admin API speaks its own
# small HTTP/1.1 (agent/admin) instead.

# gRPC for the CA protocol (agent/grpc, agent/identity): HTTP/2 from nghttp2,
# messages from protobuf (protoc generates C++ at build time). Neither links
# OpenSSL; Debian's libgrpc++ does, so it cannot be used beside BoringSSL.
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
find_package(Protobuf REQUIRED)
