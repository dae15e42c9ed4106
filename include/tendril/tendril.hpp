// tendril/tendril.hpp — the whole public API in one include.
//
//   greenlet.hpp, generator.hpp   explicit switch_()-based coroutines (Python's greenlet), generators
//   scheduler.hpp                 tasks: spawn, run, sleep_for, cancellation, timeout scopes
//   wait.hpp                      gather, gather_settled, wait, wait_for
//   sync.hpp                      promise/future, event, semaphore, channel, mutex, condition_variable
//   executor.hpp                  thread_pool, run_in_thread
//   io.hpp                        wait_readable / wait_writable
//   http.hpp, net.hpp             HTTP client (libcurl) and TCP sockets that suspend only the calling task
#pragma once

#include "tendril/executor.hpp"
#include "tendril/generator.hpp"
#include "tendril/greenlet.hpp"
#include "tendril/http.hpp"
#include "tendril/io.hpp"
#include "tendril/net.hpp"
#include "tendril/scheduler.hpp"
#include "tendril/stack.hpp"
#include "tendril/sync.hpp"
#include "tendril/value.hpp"
#include "tendril/wait.hpp"
