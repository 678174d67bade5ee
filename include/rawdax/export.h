/* RAWDAX_EXPORT: what librawdax.so exports.
 *
 * The library is compiled with -fvisibility=hidden and
 * -fvisibility-inlines-hidden, so nothing leaves librawdax.so unless its
 * declaration in include/rawdax/ carries RAWDAX_EXPORT: the public classes
 * (on the class: its out-of-line members, vtable and typeinfo) and the public
 * free functions, the C interface's included. Everything else, the layers in
 * src/ and the template instances the library happens to contain, stays
 * inside; a consumer compiles its own copies of inline code (Result<T>,
 * Error, the value types). cmake/librawdax.map, the linker's version
 * script, keeps the template instances of the standard library in too (their
 * namespace is declared visible by the library's own headers).
 * tests/install/exported_symbols.sh checks the exported list against these
 * headers (docs/architecture.md, "Public surface").
 *
 * C and C++; no other content, so every public header may include it. */
#ifndef RAWDAX_EXPORT_H_
#define RAWDAX_EXPORT_H_

#if defined(__GNUC__) || defined(__clang__)
#define RAWDAX_EXPORT __attribute__((visibility("default")))
/* On a class nested in an exported one that stays inside (a pimpl's Impl):
 * nested classes otherwise take the visibility of the class around them. */
#define RAWDAX_NO_EXPORT __attribute__((visibility("hidden")))
#else
#define RAWDAX_EXPORT
#define RAWDAX_NO_EXPORT
#endif

#endif /* RAWDAX_EXPORT_H_ */
