// A JVM heap with a hot set, for the mover: 96 arrays of 8 MiB (768 MiB
// live), then SECONDS seconds (default 8) of random increments into the
// last 8 of them (64 MiB).  Run as a single-file program:
//   java -Xms1g -Xmx1g -XX:+AlwaysPreTouch bench/workloads/HotHeap.java [SECONDS]
// Prints "updates N" (how many increments it made).
public class HotHeap {
  public static void main(String[] args) {
    final int arrays = 96, hot = 8, words = 1 << 20;
    final long seconds = args.length > 0 ? Long.parseLong(args[0]) : 8;
    long[][] heap = new long[arrays][];
    for (int i = 0; i < arrays; i++) {
      heap[i] = new long[words];
      java.util.Arrays.fill(heap[i], i);
    }
    java.util.Random r = new java.util.Random(1);
    final long end = System.nanoTime() + seconds * 1_000_000_000L;
    long updates = 0;
    while (System.nanoTime() < end) {
      long[] h = heap[arrays - 1 - r.nextInt(hot)];
      for (int k = 0; k < 4096; k++) ++h[r.nextInt(words)];
      updates += 4096;
    }
    System.out.println("updates " + updates);
  }
}
