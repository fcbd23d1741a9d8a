// The one source of sluice_test_pch (tests/CMakeLists.txt, SLUICE_TEST_PCH):
// a target needs a source for CMake to build its precompiled header, which
// the tests then reuse.
