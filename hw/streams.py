"""Small stream plumbing shared by the gateware."""
from amaranth.hdl import Value

__all__ = ["through_fifo"]


def through_fifo(m, producer, fifo, consumer):
    """Connect ``producer`` (a stream interface) to ``consumer`` through an Amaranth FIFO whose
    width is the payload's: structured payloads travel as their bits."""
    m.d.comb += [
        fifo.w_data.eq(Value.cast(producer.payload)),
        fifo.w_en.eq(producer.valid),
        producer.ready.eq(fifo.w_rdy),
        consumer.payload.eq(fifo.r_data),
        consumer.valid.eq(fifo.r_rdy),
        fifo.r_en.eq(consumer.ready),
    ]
