/* The rss stop (rss-stop.cc): armRss, call and reclaim, set on the heap addon's exports. */
#ifndef CORRAL_RSS_STOP_H
#define CORRAL_RSS_STOP_H

#include <v8.h>

namespace corral {

void RegisterRssStop(v8::Isolate* isolate, v8::Local<v8::Context> context, v8::Local<v8::Object> target);

}  // namespace corral

#endif
