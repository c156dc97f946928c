# meshlock_proto_library(NAME PROTO <file relative to agent/>): a static
# library of the C++ protoc generates for one .proto under agent/, written
# into the build tree (#include "<dir>/<name>.pb.h"). A custom command rather
# than protobuf_generate: CMake 3.25's places a proto in a subdirectory
# elsewhere than protoc writes it.
function(meshlock_proto_library name)
  cmake_parse_arguments(ARG "" "PROTO;COMMENT" "" ${ARGN})
  get_filename_component(dir ${ARG_PROTO} DIRECTORY)
  get_filename_component(stem ${ARG_PROTO} NAME_WE)
  set(out ${CMAKE_BINARY_DIR}/agent/${dir})
  add_custom_command(
    OUTPUT ${out}/${stem}.pb.cc ${out}/${stem}.pb.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
    COMMAND protobuf::protoc --cpp_out=${CMAKE_BINARY_DIR}/agent -I${CMAKE_SOURCE_DIR}/agent
            ${CMAKE_SOURCE_DIR}/agent/${ARG_PROTO}
    DEPENDS ${CMAKE_SOURCE_DIR}/agent/${ARG_PROTO} protobuf::protoc
    COMMENT "protoc: ${ARG_COMMENT}")
  add_library(${name} STATIC ${out}/${stem}.pb.cc)
  target_include_directories(${name} SYSTEM PUBLIC ${CMAKE_BINARY_DIR}/agent)
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf)
endfunction()
