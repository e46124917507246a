# cmake -DREADME=... -DMARKER=... -DSOURCE=... -P readme_excerpt_check.cmake
# Fails unless the ```cpp block after <!-- MARKER --> in README stands verbatim in SOURCE: a
# README excerpt of an example file cannot drift from the code that is compiled and run.
file(READ "${README}" _readme)
file(READ "${SOURCE}" _source)
string(REGEX MATCH "<!-- ${MARKER} -->[\r\n]+```cpp[\r\n]+([^`]*)```" _match "${_readme}")
if(NOT CMAKE_MATCH_1)
  message(FATAL_ERROR "${README}: no ```cpp block after <!-- ${MARKER} -->")
endif()
string(FIND "${_source}" "${CMAKE_MATCH_1}" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "${README}'s block <!-- ${MARKER} --> is not an excerpt of ${SOURCE}: update one from the other")
endif()
message(STATUS "${README}'s block <!-- ${MARKER} --> is an excerpt of ${SOURCE}")
