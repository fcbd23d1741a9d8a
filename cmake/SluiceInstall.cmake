# The installable C++ package: `cmake --install BUILD --prefix P` puts the
# public headers in P/include/sluice, the static libraries the pipeline needs
# in P/lib, and a CMake package in P/lib/cmake/sluice, so that an outside
# project does
#   find_package(sluice REQUIRED)
#   target_link_libraries(app PRIVATE sluice::sluice)
# The libraries stay separate (as the CLI links them); the exported targets
# carry their link order and the package config finds their dependencies
# again (sluiceConfig.cmake.in). A sanitizer build's package carries its
# sanitizer link flags on sluice::sluice, since its libraries need the
# sanitizer runtime (examples/cpp links against the ASan build in `make test`).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SLUICE_INSTALLED_LIBRARIES
    sluice_common sluice_sources sluice_sources_formats sluice_chunking sluice_embed
    sluice_embed_control sluice_store sluice_store_sqlite sluice_store_postgres sluice_store_uri
    sluice_aggregate sluice_distributed sluice_pipeline sluice_handoff)

# The one target users link: the pipeline and the hand-off, with everything below.
# (`sluice` is the CLI's name in this build, hence sluice_lib exported as sluice.)
add_library(sluice_lib INTERFACE)
set_target_properties(sluice_lib PROPERTIES EXPORT_NAME sluice)
target_link_libraries(sluice_lib INTERFACE sluice_pipeline sluice_handoff)
target_include_directories(sluice_lib INTERFACE $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                                            $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(sluice_lib INTERFACE cxx_std_20)
if(SLUICE_SANITIZE STREQUAL "address")
  target_link_options(sluice_lib INTERFACE -fsanitize=address,undefined)
elseif(SLUICE_SANITIZE STREQUAL "thread")
  target_link_options(sluice_lib INTERFACE -fsanitize=thread)
endif()
add_library(sluice::sluice ALIAS sluice_lib)

install(TARGETS sluice_lib ${SLUICE_INSTALLED_LIBRARIES} EXPORT sluiceTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The public headers whose code is in the installed libraries (the mock API
# and the Prometheus endpoint are CLI parts, not installed).
file(GLOB SLUICE_PUBLIC_HEADERS ${PROJECT_SOURCE_DIR}/include/sluice/*.h)
list(FILTER SLUICE_PUBLIC_HEADERS EXCLUDE REGEX "/(mock_api|metrics_server)\\.h$")
install(FILES ${SLUICE_PUBLIC_HEADERS} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sluice)

set(SLUICE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
install(EXPORT sluiceTargets NAMESPACE sluice:: DESTINATION ${SLUICE_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/sluiceConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/sluiceConfig.cmake
                              INSTALL_DESTINATION ${SLUICE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sluiceConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/sluiceConfig.cmake ${PROJECT_BINARY_DIR}/sluiceConfigVersion.cmake
        DESTINATION ${SLUICE_CMAKE_DIR})
