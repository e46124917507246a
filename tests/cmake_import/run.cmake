# ctest driver: install the package into a scratch prefix, then configure, build and run the
# consumer project against it with find_package(steepest).
file(REMOVE_RECURSE "${WORK}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK}/prefix"
                RESULT_VARIABLE r)
if(r)
  message(FATAL_ERROR "install failed")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SRC}" -B "${WORK}/build"
                        "-DCMAKE_PREFIX_PATH=${WORK}/prefix" -DCMAKE_BUILD_TYPE=Release
                        "-DCMAKE_CXX_COMPILER=${CXX}"
                RESULT_VARIABLE r)
if(r)
  message(FATAL_ERROR "consumer configure failed")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${WORK}/build" RESULT_VARIABLE r)
if(r)
  message(FATAL_ERROR "consumer build failed")
endif()
execute_process(COMMAND "${WORK}/build/consumer" RESULT_VARIABLE r)
if(r)
  message(FATAL_ERROR "consumer run failed")
endif()
