/* sc_main.cc -- an sc_main for programs that have their own main().
 *
 * libsystemc.so defines main(), which calls sc_main(); a program that links it but brings
 * its own main() (dlu, the tests) never calls that main, yet the linker still wants the
 * undefined sc_main of the shared library resolved. This one only satisfies the linker.
 * SystemC testbenches with their own sc_main must not link this file. */
#include <systemc>

int sc_main(int, char *[])
{
    return 1; /* never called: the program's own main() runs instead of libsystemc's */
}
